/* Jiedao 数字街道 — page behaviour. No inline scripts (CSP script-src 'self'): pages pass
 * data through data-* attributes and JSON endpoints.
 *
 * Maps: any element with [data-map] and data-geojson-url is drawn with ECharts.
 *   data-geojson-url          GeoJSON FeatureCollection; properties.code / name / counts
 *   data-child-url-template   page to open on click, "{code}" is replaced by the region code
 *   data-points-url           optional JSON with "buildings": [{lon, lat, name, kind_label}]
 *   data-highlight            optional region code drawn emphasised (e.g. the current grid)
 * The chart instance is available as echarts.getInstanceByDom(el); regions are named by code
 * (nameProperty: 'code') and labelled with their Chinese names.
 */
(function () {
  'use strict';

  var PALETTE = ['#9cc3e6', '#a8d8b9', '#f6d186', '#f4b6a6', '#c6b4e3', '#9fd9d6',
    '#f2c4de', '#cfe3a1', '#b5c7f2', '#f7c59f', '#b8e0d2', '#e2c2b9', '#d6e2e9', '#e8d1a6'];
  var KIND_COLORS = { '住宅': '#2f855a', '写字楼': '#1f4e8c', '商业': '#c05621', '学校': '#6b46c1',
    '市场': '#b7791f', '医院': '#c53030', '公共建筑': '#4a5568' };

  function csrfToken() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute('content') : '';
  }

  // htmx: send the CSRF token on every non-GET request.
  document.addEventListener('htmx:configRequest', function (evt) {
    var token = csrfToken();
    if (token && evt.detail.verb && evt.detail.verb.toLowerCase() !== 'get') {
      evt.detail.headers['X-CSRF-Token'] = token;
    }
  });

  function fmt(n) {
    return (n === undefined || n === null) ? '—' : Number(n).toLocaleString('zh-CN');
  }

  function escapeHtml(s) {
    return String(s === undefined || s === null ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  function tooltipHtml(p) {
    if (!p) { return ''; }
    var lines = ['<b>' + escapeHtml(p.name) + '</b>', '<span style="color:#64748b">' + escapeHtml(p.code) + '</span>'];
    if (p.communities !== undefined) { lines.push('社区：' + fmt(p.communities) + ' 个'); }
    if (p.grids !== undefined) { lines.push('网格：' + fmt(p.grids) + ' 个'); }
    if (p.buildings !== undefined) { lines.push('楼栋：' + fmt(p.buildings) + ' 栋'); }
    if (p.landmarks !== undefined) { lines.push('地标：' + fmt(p.landmarks) + ' 处'); }
    return lines.join('<br>');
  }

  function getJson(url) {
    return fetch(url, { credentials: 'same-origin', headers: { 'Accept': 'application/json' } })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      });
  }

  function drawMap(el) {
    if (typeof echarts === 'undefined') { return; }
    var url = el.getAttribute('data-geojson-url');
    var template = el.getAttribute('data-child-url-template');
    var pointsUrl = el.getAttribute('data-points-url');
    var highlight = el.getAttribute('data-highlight');
    var chart = echarts.init(el, null, { renderer: 'canvas' });
    chart.showLoading({ text: '地图加载中…', color: '#1f4e8c' });
    var jobs = [getJson(url), pointsUrl ? getJson(pointsUrl) : Promise.resolve(null)];
    Promise.all(jobs).then(function (res) {
      var gj = res[0];
      var pts = res[1];
      var mapName = 'jd:' + url;
      var props = {};
      gj.features.forEach(function (f) { props[f.properties.code] = f.properties; });
      echarts.registerMap(mapName, gj);
      var regions = gj.features.map(function (f, i) {
        var code = f.properties.code;
        var hl = highlight && code === highlight;
        var dim = highlight && !hl;
        return {
          name: code,
          itemStyle: {
            areaColor: dim ? '#eef2f7' : PALETTE[i % PALETTE.length],
            borderColor: hl ? '#1f4e8c' : '#ffffff',
            borderWidth: hl ? 2.5 : 1.2
          },
          label: { color: dim ? '#94a3b8' : '#1f2933' }
        };
      });
      var series = [];
      if (pts && pts.buildings) {
        series.push({
          type: 'scatter', coordinateSystem: 'geo', geoIndex: 0, symbolSize: 7, zlevel: 1,
          data: pts.buildings.map(function (b) {
            return { name: b.name, value: [b.lon, b.lat], kind: b.kind_label, address: b.address,
              itemStyle: { color: KIND_COLORS[b.kind_label] || '#1f4e8c', borderColor: '#fff', borderWidth: 1 } };
          }),
          tooltip: {
            formatter: function (p) {
              return '<b>' + escapeHtml(p.data.name) + '</b><br>' + escapeHtml(p.data.kind) +
                (p.data.address ? '<br>' + escapeHtml(p.data.address) : '');
            }
          }
        });
      }
      chart.hideLoading();
      chart.setOption({
        animation: false,
        tooltip: {
          trigger: 'item', confine: true,
          formatter: function (p) {
            if (p.componentType === 'geo') { return tooltipHtml(props[p.name]); }
            return p.name;
          }
        },
        geo: {
          map: mapName, nameProperty: 'code', roam: true, selectedMode: false,
          layoutCenter: ['50%', '50%'], layoutSize: '95%',
          tooltip: { show: true },
          label: {
            show: true, fontSize: 12,
            formatter: function (p) { var q = props[p.name]; return q ? q.name : p.name; }
          },
          itemStyle: { borderColor: '#ffffff', borderWidth: 1.2 },
          emphasis: {
            label: { show: true, fontWeight: 'bold' },
            itemStyle: { areaColor: '#fde68a', borderColor: '#1f4e8c' }
          },
          regions: regions
        },
        series: series
      });
      if (template) {
        chart.on('click', function (p) {
          if (p.componentType === 'geo' && props[p.name] && p.name !== highlight) {
            window.location.href = template.replace('{code}', encodeURIComponent(p.name));
          }
        });
        el.style.cursor = 'pointer';
      }
      el.setAttribute('data-ready', '1');
    }).catch(function (err) {
      chart.hideLoading();
      el.setAttribute('data-error', String(err));
      el.innerHTML = '<div class="empty">地图加载失败（' + escapeHtml(err.message) + '）</div>';
    });
    window.addEventListener('resize', function () { chart.resize(); });
  }

  function init(root) {
    (root || document).querySelectorAll('[data-map][data-geojson-url]').forEach(function (el) {
      if (!el.getAttribute('data-drawn')) {
        el.setAttribute('data-drawn', '1');
        drawMap(el);
      }
    });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', function () { init(); });
  } else {
    init();
  }
  document.addEventListener('htmx:afterSettle', function (evt) { init(evt.target); });
  window.Jiedao = { drawMap: drawMap, init: init };
})();
