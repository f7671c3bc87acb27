/* Jiedao 数字街道 — cockpit pages (驾驶舱). No inline scripts (CSP script-src 'self'): pages
 * pass data through data-* attributes and JSON endpoints.
 *
 *   form[data-period-form]        submits itself when the grain or the period changes
 *   #trend-chart[data-trend]      JSON {labels, keys, metrics:[{key,label,kind}], series:{key:[…]}};
 *                                 bars = 受理量, lines = rates (%), 平均办理时长 on its own axis;
 *                                 clicking a point opens data-base-url?period=<key>
 *   [data-cockpit-map]            grids from data-geojson-url coloured by the metric chosen in
 *                                 #map-metric (values from data-values-url&metric=…);
 *                                 clicking a grid opens data-click-template ("{code}")
 * Charts get data-ready="1" once drawn; the map also data-metric=<key> after each colouring.
 */
(function () {
  'use strict';

  var BLUE = '#1f4e8c';
  var LINE_COLORS = ['#16a34a', '#f59e0b', '#7c3aed', '#0891b2', '#dc2626', '#db2777', '#475569'];

  function escapeHtml(s) {
    return String(s === undefined || s === null ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  function getJson(url) {
    return fetch(url, { credentials: 'same-origin', headers: { 'Accept': 'application/json' } })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      });
  }

  function fmt(v, kind) {
    if (v === undefined || v === null) { return '—'; }
    if (kind === 'rate') { return Number(v).toFixed(1) + '%'; }
    if (kind === 'count') { return Number(v).toLocaleString('zh-CN'); }
    return Number(v).toFixed(1);
  }

  function fail(el, chart, err) {
    if (chart) { chart.hideLoading(); }
    el.setAttribute('data-error', String(err));
    el.innerHTML = '<div class="empty">图表加载失败（' + escapeHtml(err.message) + '）</div>';
  }

  // ------------------------------------------------------------ period selector
  function initPeriodForm(form) {
    ['grain-select', 'period-select'].forEach(function (id) {
      var sel = form.querySelector('#' + id);
      if (!sel) { return; }
      sel.addEventListener('change', function () {
        if (id === 'grain-select') {
          var p = form.querySelector('#period-select');
          if (p) { p.disabled = true; }  // a new grain starts at its latest period
        }
        form.submit();
      });
    });
  }

  // ------------------------------------------------------------ trend chart
  function drawTrend(el) {
    var data;
    try { data = JSON.parse(el.getAttribute('data-trend')); } catch (e) { fail(el, null, e); return; }
    var chart = echarts.init(el, null, { renderer: 'canvas' });
    var shown = { received: true, close_ontime: true, satisfied: true, resolved: true };
    var series = [];
    var selected = {};
    var li = 0;
    data.metrics.forEach(function (m) {
      var values = data.series[m.key] || [];
      selected[m.label] = !!shown[m.key];
      if (m.kind === 'count') {
        series.push({
          name: m.label, type: 'bar', yAxisIndex: 0, barMaxWidth: 28, data: values,
          itemStyle: {
            color: function (p) { return data.keys[p.dataIndex] === data.current ? '#f59e0b' : BLUE; },
            borderRadius: [3, 3, 0, 0]
          }
        });
      } else {
        series.push({
          name: m.label, type: 'line', yAxisIndex: m.kind === 'rate' ? 1 : 2, data: values,
          smooth: false, symbolSize: 6, connectNulls: true,
          lineStyle: { width: 2 }, itemStyle: { color: LINE_COLORS[li++ % LINE_COLORS.length] }
        });
      }
    });
    var kinds = {};
    data.metrics.forEach(function (m) { kinds[m.label] = m.kind; });
    chart.setOption({
      animation: false,
      grid: { left: 56, right: 96, top: 56, bottom: 36 },
      legend: { top: 0, type: 'scroll', selected: selected },
      tooltip: {
        trigger: 'axis', confine: true,
        formatter: function (ps) {
          if (!ps.length) { return ''; }
          var lines = ['<b>' + escapeHtml(ps[0].axisValue) + '</b>'];
          ps.forEach(function (p) {
            lines.push(p.marker + escapeHtml(p.seriesName) + '：' + fmt(p.value, kinds[p.seriesName]));
          });
          return lines.join('<br>');
        }
      },
      xAxis: { type: 'category', data: data.labels, axisTick: { alignWithLabel: true } },
      yAxis: [
        { type: 'value', name: '件', minInterval: 1, splitLine: { lineStyle: { color: '#eef2f7' } } },
        { type: 'value', name: '%', min: 0, max: 100, position: 'right', splitLine: { show: false } },
        { type: 'value', name: '小时', position: 'right', offset: 44, splitLine: { show: false } }
      ],
      series: series
    });
    var base = el.getAttribute('data-base-url');
    if (base) {
      chart.on('click', function (p) {
        var key = data.keys[p.dataIndex];
        if (key) { window.location.href = base + '?period=' + encodeURIComponent(key); }
      });
    }
    el.setAttribute('data-ready', '1');
    window.addEventListener('resize', function () { chart.resize(); });
  }

  // ------------------------------------------------------------ grid map
  var mapSeq = 0;

  function colorsFor(meta) {
    if (meta.kind === 'count') { return ['#eef6ff', '#93c5fd', '#3b82f6', '#1e3a8a']; }
    var good = ['#dc2626', '#f59e0b', '#fde68a', '#86efac', '#16a34a'];
    return meta.higher_is_better ? good : good.slice().reverse();
  }

  function drawCockpitMap(el) {
    var select = document.getElementById('map-metric');
    var template = el.getAttribute('data-click-template');
    var valuesUrl = el.getAttribute('data-values-url');
    var chart = echarts.init(el, null, { renderer: 'canvas' });
    var name = 'jd-cockpit-' + (++mapSeq);
    var names = {};
    chart.showLoading({ text: '地图加载中…', color: BLUE });

    function colour(metric) {
      el.removeAttribute('data-metric');
      var sep = valuesUrl.indexOf('?') >= 0 ? '&' : '?';
      return getJson(valuesUrl + sep + 'metric=' + encodeURIComponent(metric)).then(function (v) {
        var values = v.values || {};
        var nums = Object.keys(values).map(function (k) { return values[k]; });
        var min = nums.length ? Math.min.apply(null, nums) : 0;
        var max = nums.length ? Math.max.apply(null, nums) : 1;
        if (v.kind === 'count') { min = 0; }
        if (max <= min) { max = min + 1; }
        chart.hideLoading();
        chart.setOption({
          visualMap: {
            min: min, max: max, left: 10, bottom: 10, calculable: false, itemHeight: 90,
            text: [fmt(max, v.kind), fmt(min, v.kind)], inRange: { color: colorsFor(v) },
            outOfRange: { color: '#f1f5f9' }
          },
          tooltip: {
            trigger: 'item', confine: true,
            formatter: function (p) {
              var val = values[p.name];
              return '<b>' + escapeHtml(names[p.name] || p.name) + '</b><br>' + escapeHtml(v.label) +
                '：' + fmt(val, v.kind) + (v.counts && v.counts[p.name] !== undefined && v.kind !== 'count'
                ? '<br><span style="color:#64748b">样本 ' + v.counts[p.name] + ' 件</span>' : '');
            }
          },
          series: [{
            type: 'map', map: name, nameProperty: 'code', roam: true, selectedMode: false,
            layoutCenter: ['50%', '50%'], layoutSize: '95%',
            label: { show: false },
            itemStyle: { borderColor: '#7f9cc0', borderWidth: 0.6, areaColor: '#f1f5f9' },
            emphasis: { label: { show: true, fontWeight: 'bold', formatter: function (p) { return names[p.name] || p.name; } },
              itemStyle: { areaColor: '#fde68a' } },
            data: Object.keys(names).map(function (code) {
              return { name: code, value: values[code] === undefined ? null : values[code] };
            })
          }]
        }, { replaceMerge: ['series'] });
        el.setAttribute('data-ready', '1');
        el.setAttribute('data-metric', metric);
      });
    }

    getJson(el.getAttribute('data-geojson-url')).then(function (gj) {
      gj.features.forEach(function (f) { names[f.properties.code] = f.properties.name; });
      echarts.registerMap(name, gj);
      return colour(select ? select.value : 'received');
    }).then(function () {
      if (template) {
        chart.on('click', function (p) {
          if (p.componentType === 'series' && names[p.name]) {
            window.location.href = template.replace('{code}', encodeURIComponent(p.name));
          }
        });
        el.style.cursor = 'pointer';
      }
      if (select) {
        select.addEventListener('change', function () {
          colour(select.value).catch(function (err) { fail(el, chart, err); });
        });
      }
    }).catch(function (err) { fail(el, chart, err); });
    window.addEventListener('resize', function () { chart.resize(); });
  }

  function init() {
    document.querySelectorAll('form[data-period-form]').forEach(initPeriodForm);
    if (typeof echarts === 'undefined') { return; }
    document.querySelectorAll('#trend-chart[data-trend]').forEach(drawTrend);
    document.querySelectorAll('[data-cockpit-map]').forEach(drawCockpitMap);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
