/* The operator's overview: usage across users, rates, top keys and models, the pool. */
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const pool = PortalCharts.data("pool-data");
  if (pool) {
    const states = Object.keys(pool);
    PortalCharts.share("pool-chart", states, states.map(function (state) { return pool[state]; }),
      ["#1f7a3d", "#c99a1e", "#b3261e"]);
  }
  const usage = PortalCharts.data("overview-data");
  if (!usage || !usage.per_day) {
    return;
  }
  function pick(measure) {
    return usage.per_day.map(function (row) { return row[measure]; });
  }
  function rate(measure) {
    return usage.per_day.map(function (row) {
      return row.requests ? Math.round(1000 * row[measure] / row.requests) / 10 : null;
    });
  }
  const answered = usage.per_day.map(function (row) { return row.requests - row.errors - row.rejected; });
  PortalCharts.days("requests-chart", usage.days,
    [["Answered", answered], ["Errors", pick("errors")], ["Refused", pick("rejected")]], { stacked: true });
  PortalCharts.days("tokens-chart", usage.days,
    [["Prompt tokens", pick("prompt_tokens")], ["Completion tokens", pick("completion_tokens")]], { stacked: true });
  PortalCharts.draw("rates-chart", {
    type: "line",
    data: {
      labels: usage.days,
      datasets: [
        { label: "Error rate %", data: rate("errors"), borderColor: PortalCharts.color(3), backgroundColor: PortalCharts.color(3), spanGaps: true },
        { label: "Refusal rate %", data: rate("rejected"), borderColor: PortalCharts.color(5), backgroundColor: PortalCharts.color(5), spanGaps: true },
      ],
    },
    options: { scales: { y: { beginAtZero: true, suggestedMax: 10, title: { display: true, text: "% of requests" } } } },
  });
  PortalCharts.ranking("users-chart", usage.per_user, "total_tokens", "Tokens");
  PortalCharts.ranking("keys-chart", usage.per_key, "total_tokens", "Tokens");
  PortalCharts.ranking("models-chart", usage.per_model, "total_tokens", "Tokens");
});
