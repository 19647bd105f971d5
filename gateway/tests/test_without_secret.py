"""Upstream error messages lose the token they quote, also where a length cap cut it."""

from __future__ import annotations

from gateway.providers.base import HIDDEN, without_secret

TOKEN = "ok-upstream-7f3a9c1b2d"


def test_a_quoted_token_is_replaced_wherever_it_appears() -> None:
    text = f"bad token {TOKEN}; again {TOKEN}."
    assert without_secret(text, TOKEN) == f"bad token {HIDDEN}; again {HIDDEN}."


def test_a_token_cut_off_at_the_end_of_a_capped_message_goes_too() -> None:
    capped = f"Rejected credential Bearer {TOKEN}"[:-5]
    assert without_secret(capped, TOKEN) == f"Rejected credential Bearer {HIDDEN}"


def test_text_without_the_token_is_left_alone() -> None:
    text = "Rejected credential Bearer ok-up"  # only five of its characters: not a quote
    assert without_secret(text, TOKEN) == text
    assert without_secret(text, "") == text
