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

  function axes(ink, grid, format) {
    var y = { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, size: 56 };
    if (format) { y.values = function (u, splits) { return splits.map(format); }; }
    return [{ stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } }, y];
  }

  function draw(id, columns, series, format, yMin) {
    var box = document.getElementById(id);
    if (!box || !columns || !columns[0] || !columns[0].length) { return; }
    var ink = cssVar("--muted", "#5b6475"), grid = cssVar("--line", "#dfe3ea");
    var opts = {
      width: Math.max(box.clientWidth, 200),
      height: 220,
      series: [{}, series],
      axes: axes(ink, grid, format),
      scales: { y: { range: function (u, min, max) { return [yMin, Math.max(max * 1.15, yMin + 1)]; } } },
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
  }, seconds, 0);
  draw("chart-running", data.running, {
    label: "Running",
    stroke: accent,
    width: 2,
    fill: "rgba(109, 141, 255, 0.15)",
    paths: uPlot.paths.stepped({ align: 1 }),
    points: { show: false },
    value: function (u, v) { return v == null ? "—" : String(v); }
  }, function (v) { return Number.isInteger(v) ? String(v) : ""; }, 0);

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
