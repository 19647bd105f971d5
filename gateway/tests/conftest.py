"""Fixtures shared by the tests of the usage ledger's writing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from accounts.keys import KeyLimits, issue_key
from gateway.usage import UsageMeter


@pytest.fixture
def meter_for(tmp_path: Path) -> Iterator[Callable[..., UsageMeter]]:
    """Meters of one key's requests, by request id (and model); the journal under tmp_path."""
    user = User.objects.create(username="jo")
    key, _raw = issue_key(user=user, name="j", limits=KeyLimits())

    def make(request_id: str, model: str = "gpt-4o-mini") -> UsageMeter:
        return UsageMeter(
            request_id=request_id,
            key_id=key.pk,
            user_id=user.pk,
            key_prefix=key.prefix,
            endpoint="chat.completions",
            model=model,
            stream=False,
        )

    with override_settings(VAR_DIR=str(tmp_path)):
        yield make
