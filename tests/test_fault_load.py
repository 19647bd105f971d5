"""A smaller run of bench/fault_load.py: one usage row per request, with its client's tokens."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.fault_calls import Received, plan_calls
from bench.fault_check import Check, compare, keyless_refusals, row_counts
from bench.fault_load import Options, run
from bench.private_postgres import postgres_bin
from gateway.testing.fake_scenarios import chunk_texts
from tests.conftest import Fake


def test_the_comparison_finds_rows_missing_doubled_foreign_or_with_other_tokens() -> None:
    calls = plan_calls(4, 1, "t")[:3]
    assert {(call.kind, call.stream) for call in calls} == {("ok", True)}
    results = {
        call.request_id: Received(200, "", chunk_texts(call.chunks), call.chunks, done=True)
        for call in calls
    }
    rows = [
        {"request_id": call.request_id, "status": "ok", "http_status": 200,
         "completion_tokens": call.chunks}
        for call in calls
    ]  # fmt: skip
    assert compare(calls, results, rows, Check(None, frozenset())) == []

    wrong = [rows[0], rows[0], {**rows[1], "completion_tokens": 99}, {**rows[2], "request_id": "x"}]
    found = compare(calls, results, wrong, Check(None, frozenset()))

    assert found == [
        f"{calls[0].request_id} ({calls[0].model}): 2 rows, not 1 (client saw 200)",
        f"{calls[1].request_id} ({calls[1].model}): row ('ok', 200, 99), "
        f"not ('ok', 200, {calls[1].chunks})",
        f"{calls[2].request_id} ({calls[2].model}): 0 rows, not 1 (client saw 200)",
        "x: 1 rows of no request sent",
    ]
    assert row_counts(calls, wrong) == {"missing": 1, "doubled": 1, "foreign": 1}


def test_keyless_refusals_are_the_run_s_request_lines_without_a_key() -> None:
    log = "\n".join(
        [
            '{"request_id":"fl-abc-00001","message":"request","key":null,"http_status":503}',
            '{"request_id":"fl-abc-00002","message":"request","key":"sk-12345678"}',
            '{"request_id":"fl-abc-00003","message":"model call","key":null}',
            '{"request_id":"fl-xyz-00004","message":"request","key":null}',
            "INFO:     Started server process [1]",
        ]
    )
    assert keyless_refusals(log, "abc") == {"fl-abc-00001"}


def test_a_load_with_faults_and_disconnects_leaves_one_row_per_request_with_its_tokens(
    fake_server: Fake,
) -> None:
    options = Options(requests=400, concurrency=16, seed=3)
    kinds = Counter(call.kind for call in plan_calls(400, 3, "test"))

    report = run(options, fake_url=fake_server.url)

    assert report.mismatches == [], report.summary(options)
    assert report.rows == 400
    assert [report.counts[name] for name in ("missing", "doubled", "foreign")] == [0, 0, 0]
    assert report.replies == {
        "200": kinds["ok"] + kinds["disconnect"],
        "200 upstream_error": kinds["fault_after"],
        "502 upstream_error": kinds["fault_before"],
    }
    assert min(kinds.values()) > 10  # every kind of call was made
    assert len(report.workers[0]) == 2
    assert not report.restarted


@pytest.mark.skipif(postgres_bin() is None, reason="needs PostgreSQL's server programs")
def test_a_database_stopped_mid_run_loses_and_doubles_no_row(fake_server: Fake) -> None:
    options = Options(
        requests=400, concurrency=16, database="postgres", stop_database_at=0.4, down_seconds=4
    )

    report = run(options, fake_url=fake_server.url)

    assert report.mismatches == [], report.summary(options)
    assert report.rows == 400 - report.keyless
    counts = [report.counts[name] for name in ("missing", "doubled", "foreign")]
    assert counts == [report.keyless, 0, 0]  # a refusal before the key was known has no row
    assert any(reply.endswith("(sent while down)") for reply in report.replies)
    assert len(report.workers[0]) == 2
    assert not report.restarted
