/* Jiedao 数字街道 — case screens (workbench, case page, street view). No inline scripts:
 * pages pass data through data-* attributes and JSON endpoints.
 *
 *   [data-case-map][data-url]        the case's grid polygon and point (GeoJSON + "point")
 *   [data-area-map]                  regions from data-geojson-url coloured by data-counts
 *                                    (JSON {code: open cases}); click → data-click-template
 *   input[data-filter-select=SEL]    filters the <option>s of a select by their data-text
 *   input[data-filter-target=SEL]    filters the label[data-text] children of a box
 * Maps get data-ready="1" once drawn (tests wait for it).
 */
(function () {
  'use strict';

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

  function fail(el, chart, err) {
    if (chart) { chart.hideLoading(); }
    el.setAttribute('data-error', String(err));
    el.innerHTML = '<div class="empty">地图加载失败（' + escapeHtml(err.message) + '）</div>';
  }

  var mapSeq = 0;

  function drawCaseMap(el) {
    var chart = echarts.init(el, null, { renderer: 'canvas' });
    chart.showLoading({ text: '地图加载中…', color: '#1f4e8c' });
    getJson(el.getAttribute('data-url')).then(function (gj) {
      var series = [];
      var option = { animation: false, tooltip: { trigger: 'item', confine: true }, series: series };
      if (gj.features && gj.features.length) {
        var name = 'jd-case-' + (++mapSeq);
        echarts.registerMap(name, { type: 'FeatureCollection', features: gj.features });
        option.geo = {
          map: name, nameProperty: 'code', roam: true, selectedMode: false,
          layoutCenter: ['50%', '50%'], layoutSize: '88%',
          label: { show: true, color: '#1e3a5f', fontSize: 12,
            formatter: function () { return gj.features[0].properties.name; } },
          itemStyle: { areaColor: '#dbeafe', borderColor: '#1f4e8c', borderWidth: 2 },
          emphasis: { label: { show: true }, itemStyle: { areaColor: '#bfdbfe' } },
          tooltip: { formatter: function () { return escapeHtml(gj.features[0].properties.name); } }
        };
      }
      if (gj.point) {
        if (!option.geo) {
          // no grid: a tiny square around the point so the geo component has a frame
          var d = 0.002, x = gj.point[0], y = gj.point[1];
          var nm = 'jd-pt-' + (++mapSeq);
          echarts.registerMap(nm, { type: 'FeatureCollection', features: [{ type: 'Feature',
            properties: { code: 'pt', name: '' }, geometry: { type: 'Polygon', coordinates: [[
              [x - d, y - d], [x + d, y - d], [x + d, y + d], [x - d, y + d], [x - d, y - d]]] } }] });
          option.geo = { map: nm, nameProperty: 'code', roam: true, silent: true,
            itemStyle: { areaColor: '#f8fafc', borderColor: '#e2e8f0' } };
        }
        series.push({
          type: 'effectScatter', coordinateSystem: 'geo', geoIndex: 0, symbolSize: 14, zlevel: 2,
          rippleEffect: { scale: 3, brushType: 'stroke' },
          itemStyle: { color: '#dc2626', borderColor: '#fff', borderWidth: 2 },
          data: [{ name: gj.label || '', value: gj.point }],
          tooltip: { formatter: function (p) { return '诉求地点<br>' + escapeHtml(p.name); } }
        });
      }
      chart.hideLoading();
      if (!option.geo) { fail(el, null, new Error('无网格与坐标')); return; }
      chart.setOption(option);
      el.setAttribute('data-ready', '1');
    }).catch(function (err) { fail(el, chart, err); });
    window.addEventListener('resize', function () { chart.resize(); });
  }

  function drawAreaMap(el) {
    var counts = {};
    try { counts = JSON.parse(el.getAttribute('data-counts') || '{}'); } catch (e) { counts = {}; }
    var template = el.getAttribute('data-click-template');
    var chart = echarts.init(el, null, { renderer: 'canvas' });
    chart.showLoading({ text: '地图加载中…', color: '#1f4e8c' });
    getJson(el.getAttribute('data-geojson-url')).then(function (gj) {
      var name = 'jd-area-' + (++mapSeq);
      var names = {};
      var max = 0;
      gj.features.forEach(function (f) {
        names[f.properties.code] = f.properties.name;
        max = Math.max(max, counts[f.properties.code] || 0);
      });
      echarts.registerMap(name, gj);
      chart.hideLoading();
      chart.setOption({
        animation: false,
        tooltip: {
          trigger: 'item', confine: true,
          formatter: function (p) {
            return '<b>' + escapeHtml(names[p.name] || p.name) + '</b><br>未办结工单：' +
              (counts[p.name] || 0) + ' 件';
          }
        },
        visualMap: {
          min: 0, max: Math.max(max, 1), left: 10, bottom: 10, calculable: false,
          text: ['多', '少'], itemHeight: 90,
          inRange: { color: ['#eef6ff', '#93c5fd', '#f59e0b', '#dc2626'] }
        },
        series: [{
          type: 'map', map: name, nameProperty: 'code', roam: true, selectedMode: false,
          layoutCenter: ['50%', '50%'], layoutSize: '95%',
          label: { show: true, fontSize: 11, color: '#1f2933',
            formatter: function (p) { return (names[p.name] || '') + (counts[p.name] ? '\n' + counts[p.name] : ''); } },
          itemStyle: { borderColor: '#7f9cc0', borderWidth: 1 },
          emphasis: { label: { show: true, fontWeight: 'bold' }, itemStyle: { areaColor: '#fde68a' } },
          data: gj.features.map(function (f) {
            return { name: f.properties.code, value: counts[f.properties.code] || 0 };
          })
        }]
      });
      if (template) {
        chart.on('click', function (p) {
          if (p.name && names[p.name]) {
            window.location.href = template.replace('{code}', encodeURIComponent(p.name));
          }
        });
        el.style.cursor = 'pointer';
      }
      el.setAttribute('data-ready', '1');
    }).catch(function (err) { fail(el, chart, err); });
    window.addEventListener('resize', function () { chart.resize(); });
  }

  function drawWhenVisible(el, draw) {
    if (el.getAttribute('data-drawn')) { return; }
    if (typeof echarts === 'undefined') { return; }
    if (el.offsetWidth === 0) { return; } // inside a closed <details>: drawn when opened
    el.setAttribute('data-drawn', '1');
    draw(el);
  }

  function filterOptions(input) {
    var sel = document.querySelector(input.getAttribute('data-filter-select'));
    if (!sel) { return; }
    var q = input.value.trim().toLowerCase();
    var first = null;
    sel.querySelectorAll('option').forEach(function (o) {
      var hit = !q || (o.getAttribute('data-text') || o.textContent).toLowerCase().indexOf(q) >= 0;
      o.hidden = !hit;
      if (hit && !first) { first = o; }
    });
    sel.querySelectorAll('optgroup').forEach(function (g) {
      g.hidden = !g.querySelector('option:not([hidden])');
    });
    return first;
  }

  function filterLabels(input) {
    var box = document.querySelector(input.getAttribute('data-filter-target'));
    if (!box) { return; }
    var q = input.value.trim().toLowerCase();
    box.querySelectorAll('label[data-text]').forEach(function (l) {
      l.hidden = q && l.getAttribute('data-text').toLowerCase().indexOf(q) < 0 &&
        !l.querySelector('input:checked');
    });
  }

  function init(root) {
    root = root || document;
    root.querySelectorAll('[data-case-map][data-url]').forEach(function (el) {
      drawWhenVisible(el, drawCaseMap);
    });
    root.querySelectorAll('[data-area-map][data-geojson-url]').forEach(function (el) {
      drawWhenVisible(el, drawAreaMap);
    });
  }

  document.addEventListener('input', function (evt) {
    var t = evt.target;
    if (t.matches && t.matches('input[data-filter-select]')) { filterOptions(t); }
    if (t.matches && t.matches('input[data-filter-target]')) { filterLabels(t); }
  });
  // Enter in the matter search picks the first match instead of submitting the form.
  document.addEventListener('keydown', function (evt) {
    var t = evt.target;
    if (evt.key === 'Enter' && t.matches && t.matches('input[data-filter-select]')) {
      evt.preventDefault();
      var first = filterOptions(t);
      var sel = document.querySelector(t.getAttribute('data-filter-select'));
      if (first && sel) {
        sel.value = first.value;
        sel.dispatchEvent(new Event('change', { bubbles: true }));
      }
    }
  });
  document.addEventListener('toggle', function (evt) {
    if (evt.target.open) { init(evt.target); }
  }, true);
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', function () { init(); });
  } else {
    init();
  }
  document.addEventListener('htmx:afterSettle', function (evt) { init(evt.target); });
  window.JiedaoCases = { init: init };
})();
