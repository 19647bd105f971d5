"""`check_upstreams`: probe every enabled upstream, update its state, print a table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from gateway.prober import ProbeReport, check_now

COLUMNS = ("label", "provider", "account", "state", "ms", "result")


class Command(BaseCommand):
    help = "Probe every enabled upstream with a cheap call; print each one's state after it."

    def handle(self, *args: Any, **options: Any) -> None:
        reports = check_now()
        if not reports:
            self.stderr.write("No enabled upstream to probe.")
            return
        self.stdout.write(render_table(reports))
        healthy = sum(report.state == "healthy" for report in reports)
        self.stderr.write(f"{healthy} of {len(reports)} upstream(s) healthy.")


def render_table(reports: list[ProbeReport]) -> str:
    rows = [COLUMNS] + [
        (r.label, r.provider, r.account, r.state, "" if r.ms is None else str(r.ms), r.result)
        for r in sorted(reports, key=lambda r: r.label)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    # The last column (why) is left ragged: it can be long.
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    )
