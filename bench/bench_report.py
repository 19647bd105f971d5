"""The summary of one `make bench` run: each gateway as ratios to the bare proxy, and the
targets of the performance issue beside the figures."""

from __future__ import annotations

import json
import statistics
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


@dataclass(frozen=True)
class AtOne:
    """CPU per request and p50 at c=1: the medians of the alternated runs where there are
    some (bench/gateway_bench.alternate_at_one), else the one run's."""

    cpu: float
    p50: float

    @classmethod
    def of(cls, label: str, run: Row, alternations: dict[str, Row]) -> AtOne:
        turns = [_at(alternations[name], 1) for name in alternations if _turn_of(name) == label]
        if not turns:
            turns = [_at(run, 1)]
        return cls(
            statistics.median(turn["target_cpu_ms_per_req"] for turn in turns),
            statistics.median(turn["p50_ms"] for turn in turns),
        )


def _turn_of(name: str) -> str:
    return name.rsplit("-", 1)[0]  # gw-openai-sqlite-1w-2 → gw-openai-sqlite-1w


def _summary_row(
    label: str, run: Row, beside: Beside, direct: Row, alternations: dict[str, Row]
) -> str:
    bare = beside.bare
    gateway_at_one = AtOne.of(label, run, alternations)
    bare_at_one = AtOne.of(f"minimal-for-{label}", bare, alternations)
    cpu = gateway_at_one.cpu
    cpu_ratio = _ratio(cpu, bare_at_one.cpu)
    added = gateway_at_one.p50 - _at(beside.upstream, 1)["p50_ms"]
    added_ratio = _ratio(added, bare_at_one.p50 - _at(beside.direct, 1)["p50_ms"])
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
    alternations = _load(out / "alternations")
    direct = runs["direct"]
    lines = [
        "\n### The gateway against the bare proxy measured just before it, same run\n",
        "At c=1: medians of three runs of each, alternated; added p50: less the p50 of the "
        "upstream each calls, timed alone just before (the shared fake, or the fake Puter).\n",
        "| configuration | CPU ms/req c=1 | vs bare (≤ 3.0x) | added p50 ms c=1 | vs bare "
        "(≤ 2.5x) | best req/s | CPU ms/stream | vs bare (≤ 2.0x) | paced TTFB p50 ms "
        "(Δ bare ≤ 3) | paced total p50 ms (vs direct ≤ 5 %) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    gateways = sorted(label for label in runs if label.startswith("gw-"))
    for label in gateways:
        beside = _beside(label, runs, pairs)
        lines.append(_summary_row(label, runs[label], beside, direct, alternations))
    lines += (
        _scaling(runs, gateways, alternations, _load(out / "services"))
        + _many_streams(_load(out / "paced64"))
        + _memory(out)
    )
    print("\n".join(lines))


def _best_rps(run: Row) -> float:
    return float(max(m["rps"] for m in run["nonstream"]))


def _scaling(
    runs: dict[str, Row],
    gateways: list[str],
    alternations: dict[str, Row],
    side_by_side: dict[str, Row],
) -> list[str]:
    lines = ["\n### Scaling and services\n"]
    if {"minimal-1w", "minimal-2w"} <= runs.keys():
        # What this machine allows: the floor's own gain, with the fake and the load generator
        # on the same two cores.
        gain = _best_rps(runs["minimal-2w"]) / _best_rps(runs["minimal-1w"])
        lines.append(
            f"- minimal-2w (the bare proxy, for reference): {gain:.2f}x the req/s of one worker"
        )
    for label in gateways:
        if label.endswith("-2w") and label.replace("-2w", "-1w") in runs:
            gain = _best_rps(runs[label]) / _best_rps(runs[label.replace("-2w", "-1w")])
            lines.append(f"- {label}: {gain:.2f}x the req/s of one worker{_mark(gain >= 1.7)}")
        if "-pg-" in label and label.replace("-pg-", "-sqlite-") in runs:
            lines.append(_services_line(label, runs, alternations, side_by_side))
    return lines


def _services_line(
    label: str, runs: dict[str, Row], alternations: dict[str, Row], side_by_side: dict[str, Row]
) -> str:
    """PostgreSQL + Redis against SQLite at c=1: the medians of the two served side by side
    and alternated (bench/gateway_bench.alternate_services), else of their own alternations."""
    lite_label = label.replace("-pg-", "-sqlite-")
    turns = side_by_side if any(_turn_of(name) == label for name in side_by_side) else alternations
    pg = AtOne.of(label, runs[label], turns).cpu
    ratio = _ratio(pg, AtOne.of(lite_label, runs[lite_label], turns).cpu)
    how = " (side by side, alternated)" if turns is side_by_side else ""
    return (
        f"- {label}: CPU per request {_fmt(ratio, 2, 'x')} the SQLite figure{how} (≤ 1.3x)"
        f"{_mark(ratio <= 1.3 if ratio else None)}"
    )


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
