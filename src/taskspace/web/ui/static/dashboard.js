// The dashboard's two time series, drawn with uPlot from the JSON the page embeds
// (<script type="application/json" id="dashboard-data">): no inline script, no network.
(function () {
  "use strict";
  var source = document.getElementById("dashboard-data");
  if (!source || typeof uPlot === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var charts = [];

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function seconds(value) {
    if (value == null) { return "—"; }
    if (value < 60) { return value.toFixed(value < 10 ? 1 : 0) + " s"; }
    if (value < 3600) { return Math.floor(value / 60) + " min " + Math.round(value % 60) + " s"; }
    return Math.floor(value / 3600) + " h " + Math.round((value % 3600) / 60) + " min";
  }

  // Axis labels stay short: "45 s", "2 min", "1.5 h".
  function shortSeconds(value) {
    if (value < 10) { return +value.toFixed(1) + " s"; }
    if (value < 120) { return Math.round(value) + " s"; }
    if (value < 7200) { return +(value / 60).toFixed(1) + " min"; }
    return +(value / 3600).toFixed(1) + " h";
  }

  function axes(ink, grid, format) {
    var y = { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, size: 60 };
    if (format) { y.values = function (u, splits) { return splits.map(format); }; }
    return [{ stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } }, y];
  }

  // The whole data: from the first point (at least minSpan seconds back) to now, so one point
  // or a few seconds of samples still get a readable time axis. A zoomed range stays as chosen.
  function xRange(xs, minSpan) {
    var first = xs[0], last = xs[xs.length - 1];
    return function (u, min, max) {
      if (min <= first && max >= last) { return [Math.min(first, data.now - minSpan), Math.max(last, data.now)]; }
      return [min, max];
    };
  }

  function draw(id, columns, series, format, yMin, minSpan) {
    var box = document.getElementById(id);
    if (!box || !columns || !columns[0] || !columns[0].length) { return; }
    var ink = cssVar("--muted", "#5b6475"), grid = cssVar("--line", "#dfe3ea");
    var opts = {
      width: Math.max(box.clientWidth, 200),
      height: 220,
      series: [{}, series],
      axes: axes(ink, grid, format),
      scales: {
        x: { time: true, range: xRange(columns[0], minSpan) },
        y: { range: function (u, min, max) { return [yMin, max > yMin ? max * 1.15 : yMin + 1]; } }
      },
      legend: { show: true },
      cursor: { drag: { x: true, y: false } }
    };
    box.textContent = "";
    charts.push({ box: box, plot: new uPlot(opts, columns, box) });
  }

  var accent = cssVar("--accent", "#2f5bea");
  draw("chart-ready", data.ready, {
    label: "Time to ready",
    stroke: accent,
    fill: accent,
    paths: function () { return null; },
    points: { show: true, size: 7, width: 1, stroke: accent, fill: accent },
    value: function (u, v) { return seconds(v); }
  }, shortSeconds, 0, 86400);
  draw("chart-running", data.running, {
    label: "Running",
    stroke: accent,
    width: 2,
    fill: "rgba(109, 141, 255, 0.15)",
    paths: uPlot.paths.stepped({ align: 1 }),
    // A few samples (a new installation) would be too short a line to see: mark each one.
    points: { show: (data.running[0] || []).length <= 60, size: 6, fill: accent },
    value: function (u, v) { return v == null ? "—" : String(v); }
  }, function (v) { return Number.isInteger(v) ? String(v) : ""; }, 0, 3600);

  var pending = false;
  window.addEventListener("resize", function () {
    if (pending) { return; }
    pending = true;
    window.requestAnimationFrame(function () {
      pending = false;
      charts.forEach(function (c) { c.plot.setSize({ width: Math.max(c.box.clientWidth, 200), height: 220 }); });
    });
  });
})();
