/* The portal's home: requests and tokens of the last two weeks. */
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const recent = PortalCharts.data("recent-data");
  if (!recent) {
    return;
  }
  PortalCharts.draw("recent-chart", {
    type: "bar",
    data: {
      labels: recent.days,
      datasets: [
        { label: "Requests", data: recent.requests, backgroundColor: PortalCharts.color(0), yAxisID: "requests" },
        {
          label: "Tokens",
          data: recent.tokens,
          type: "line",
          borderColor: PortalCharts.color(1),
          backgroundColor: PortalCharts.color(1),
          yAxisID: "tokens",
        },
      ],
    },
    options: {
      scales: {
        requests: { position: "left", beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "requests" } },
        tokens: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "tokens" } },
      },
    },
  });
});
