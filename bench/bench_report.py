"""The summary of one `make bench` run: each gateway as ratios to the bare proxy, and the
targets of the performance issue beside the figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _load(out: Path) -> dict[str, Row]:
    runs: dict[str, Row] = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if "nonstream" in data:  # loadgen runs; memory.json is read on its own
            runs[data["label"]] = data
    return runs


def _at(run: Row, concurrency: int) -> Row:
    return next(m for m in run["nonstream"] if m["concurrency"] == concurrency)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def _added_p50(run: Row, direct: Row) -> float:
    return float(_at(run, 1)["p50_ms"] - _at(direct, 1)["p50_ms"])


@dataclass(frozen=True)
class Beside:
    """What was measured just before a configuration: the bare proxy, the shared fake it
    calls, and the gateway's own upstream (the fake Puter, or the shared fake again)."""

    bare: Row
    direct: Row
    upstream: Row


def _beside(label: str, runs: dict[str, Row], pairs: dict[str, Row]) -> Beside:
    bare = pairs.get(f"minimal-for-{label}") or runs[f"minimal-{label.rsplit('-', 1)[1]}"]
    direct = pairs.get(f"direct-for-{label}") or runs["direct"]  # runs before they were timed
    return Beside(bare, direct, pairs.get(f"upstream-for-{label}") or direct)


def _summary_row(label: str, run: Row, beside: Beside, direct: Row) -> str:
    bare = beside.bare
    cpu = _at(run, 1).get("target_cpu_ms_per_req")
    cpu_ratio = _ratio(cpu, _at(bare, 1).get("target_cpu_ms_per_req"))
    added = _added_p50(run, beside.upstream)
    added_ratio = _ratio(added, _added_p50(bare, beside.direct))
    stream_ratio = _ratio(
        run["stream"].get("target_cpu_ms_per_req"), bare["stream"].get("target_cpu_ms_per_req")
    )
    paced, bare_paced, direct_paced = (
        run["paced_stream"],
        bare["paced_stream"],
        direct["paced_stream"],
    )
    ttfb_delta = paced["ttfb_p50_ms"] - bare_paced["ttfb_p50_ms"]
    total_pct = (paced["total_p50_ms"] / direct_paced["total_p50_ms"] - 1) * 100
    rps = max(m["rps"] for m in run["nonstream"])
    first = "1w" in label and "sqlite" in label
    return (
        f"| {label} | {_fmt(cpu)} | {_fmt(cpu_ratio, 2, 'x')}"
        f"{_mark(cpu_ratio <= 3.0 if first and cpu_ratio else None)} | "
        f"{_fmt(added)} | {_fmt(added_ratio, 2, 'x')}"
        f"{_mark(added_ratio <= 2.5 if first and added_ratio else None)} | {rps:.0f} | "
        f"{_fmt(run['stream'].get('target_cpu_ms_per_req'))} | {_fmt(stream_ratio, 2, 'x')}"
        f"{_mark(stream_ratio <= 2.0 if stream_ratio else None)} | "
        f"{_fmt(paced['ttfb_p50_ms'])} ({ttfb_delta:+.2f}){_mark(ttfb_delta <= 3.0)} | "
        f"{_fmt(paced['total_p50_ms'])} ({total_pct:+.1f} %){_mark(total_pct <= 5.0)} |"
    )


def print_report(out: Path) -> None:
    runs = _load(out)
    pairs = _load(out / "pairs")
    direct = runs["direct"]
    lines = [
        "\n### The gateway against the bare proxy measured just before it, same run\n",
        "| configuration | CPU ms/req c=1 | vs bare (≤ 3.0x) | added p50 ms c=1 | vs bare "
        "(≤ 2.5x) | best req/s | CPU ms/stream | vs bare (≤ 2.0x) | paced TTFB p50 ms "
        "(Δ bare ≤ 3) | paced total p50 ms (vs direct ≤ 5 %) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    gateways = sorted(label for label in runs if label.startswith("gw-"))
    for label in gateways:
        lines.append(_summary_row(label, runs[label], _beside(label, runs, pairs), direct))
    lines += _scaling(runs, gateways) + _many_streams(_load(out / "paced64")) + _memory(out)
    print("\n".join(lines))


def _best_rps(run: Row) -> float:
    return float(max(m["rps"] for m in run["nonstream"]))


def _scaling(runs: dict[str, Row], gateways: list[str]) -> list[str]:
    lines = ["\n### Scaling and services\n"]
    for label in gateways:
        if label.endswith("-2w") and label.replace("-2w", "-1w") in runs:
            gain = _best_rps(runs[label]) / _best_rps(runs[label.replace("-2w", "-1w")])
            lines.append(f"- {label}: {gain:.2f}x the req/s of one worker{_mark(gain >= 1.7)}")
        if "-pg-" in label and label.replace("-pg-", "-sqlite-") in runs:
            pg = _at(runs[label], 1).get("target_cpu_ms_per_req")
            lite = _at(runs[label.replace("-pg-", "-sqlite-")], 1).get("target_cpu_ms_per_req")
            ratio = _ratio(pg, lite)
            lines.append(
                f"- {label}: CPU per request {_fmt(ratio, 2, 'x')} the SQLite figure (≤ 1.3x)"
                f"{_mark(ratio <= 1.3 if ratio else None)}"
            )
    return lines


def _many_streams(runs: dict[str, Row]) -> list[str]:
    """64 paced streams at once, with the bare proxy's own figures under the same load."""
    lines = []
    for label in sorted(runs, key=lambda name: ("minimal" not in name, name)):
        paced = runs[label]["paced_stream"]
        name = label.removeprefix("paced64-")
        cpu, cores = paced.get("target_cpu_ms_per_req"), paced.get("target_cores_used")
        figures = (
            f"64 concurrent paced streams, first byte p50 {_fmt(paced['ttfb_p50_ms'])} ms, "
            f"p99 {_fmt(paced['ttfb_p99_ms'])} ms, CPU {_fmt(cpu)} ms/stream, "
            f"{_fmt(cores)} cores busy"
        )
        if name.startswith("minimal"):
            lines.append(f"- {name} (the bare proxy, for reference): {figures}")
        else:
            lines.append(f"- {name}: {figures} (≤ 50){_mark(paced['ttfb_p99_ms'] <= 50)}")
    return lines


def _memory(out: Path) -> list[str]:
    path = out / "memory.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    first, last = data["rss_kib"]["10000"], data["rss_kib"]["100000"]
    growth = (last - first) / 1024
    return [
        f"- {data['label']}: resident memory {first / 1024:.1f} MiB after 10,000 requests, "
        f"{last / 1024:.1f} MiB after 100,000 ({growth:+.1f} MiB, < 10){_mark(growth < 10)}"
    ]
