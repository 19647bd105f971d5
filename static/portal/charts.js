/* Shared by the dashboards' page scripts: read a page's JSON and draw Chart.js charts. */
"use strict";

window.PortalCharts = (function () {
  const palette = ["#2f5fd0", "#e07b39", "#1f9d6c", "#b3261e", "#7a4fc9", "#c99a1e", "#2a9bb7", "#8c6d5a"];
  const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  function data(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function color(index) {
    return palette[index % palette.length];
  }

  function draw(canvasId, config) {
    const canvas = document.getElementById(canvasId);
    if (!canvas || typeof Chart === "undefined") {
      return null;
    }
    config.options = Object.assign(
      {
        responsive: true,
        maintainAspectRatio: false,
        animation: reduceMotion ? false : { duration: 300 },
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom" } },
      },
      config.options || {}
    );
    return new Chart(canvas, config);
  }

  function dataset(label, values, index, extra) {
    return Object.assign(
      { label: label, data: values, backgroundColor: color(index), borderColor: color(index), maxBarThickness: 36 },
      extra || {}
    );
  }

  /* Per-day bars: one dataset per [label, values] pair, stacked when asked. */
  function days(canvasId, labels, series, options) {
    const stacked = Boolean(options && options.stacked);
    return draw(canvasId, {
      type: "bar",
      data: {
        labels: labels,
        datasets: series.map(function (pair, index) { return dataset(pair[0], pair[1], index); }),
      },
      options: {
        scales: {
          x: { stacked: stacked },
          y: { stacked: stacked, beginAtZero: true, ticks: { precision: 0 } },
        },
      },
    });
  }

  /* A breakdown (per model, key or user) as horizontal bars of one measure. */
  function ranking(canvasId, slices, measure, label) {
    return draw(canvasId, {
      type: "bar",
      data: {
        labels: slices.map(function (slice) { return slice.label; }),
        datasets: [dataset(label, slices.map(function (slice) { return slice[measure]; }), 0)],
      },
      options: {
        indexAxis: "y",
        plugins: { legend: { display: false } },
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
  }

  function share(canvasId, labels, values, colors) {
    return draw(canvasId, {
      type: "doughnut",
      data: { labels: labels, datasets: [{ data: values, backgroundColor: colors }] },
    });
  }

  return { data: data, color: color, days: days, ranking: ranking, share: share, draw: draw };
})();
