"""Chores at most once per interval per name."""

from __future__ import annotations

import pytest

from accounts import pacing
from accounts.pacing import AtMostEvery


def test_a_chore_is_due_once_per_interval_and_per_name() -> None:
    every = AtMostEvery(60.0)
    assert every.due("a", 1000.0)
    assert not every.due("a", 1059.9)
    assert every.due("b", 1059.9)
    assert every.due("a", 1060.0)


def test_forgetting_all_names_only_makes_each_chore_due_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pacing, "MAX_NAMES", 3)
    every = AtMostEvery(60.0)
    assert [every.due(name, 0.0) for name in "abc"] == [True] * 3
    assert every.due("d", 1.0)  # the fourth name: the others are forgotten
    assert every.due("a", 2.0)
    assert not every.due("d", 3.0)
