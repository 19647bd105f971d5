/* The usage page: requests and tokens per day, and tokens per model and per key. */
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const usage = PortalCharts.data("usage-data");
  if (!usage) {
    return;
  }
  function pick(rows, measure) {
    return rows.map(function (row) { return row[measure]; });
  }
  const ok = usage.per_day.map(function (row) { return row.requests - row.errors - row.rejected; });
  PortalCharts.days("requests-chart", usage.days, [
    ["Answered", ok],
    ["Errors", pick(usage.per_day, "errors")],
    ["Refused", pick(usage.per_day, "rejected")],
  ], { stacked: true });
  PortalCharts.days("tokens-chart", usage.days, [
    ["Prompt tokens", pick(usage.per_day, "prompt_tokens")],
    ["Completion tokens", pick(usage.per_day, "completion_tokens")],
  ], { stacked: true });
  PortalCharts.ranking("models-chart", usage.per_model, "total_tokens", "Tokens");
  PortalCharts.ranking("keys-chart", usage.per_key, "total_tokens", "Tokens");
});
