"""Re-encrypting upstream tokens under the newest TOKEN_ENCRYPTION_KEY (key rotation)."""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from django.db import transaction

from gateway.models import Upstream
from gateway.token_cipher import cipher


class UndecryptableTokens(Exception):
    """Some tokens open with none of the configured keys; nothing was changed."""

    def __init__(self, labels: list[str]) -> None:
        super().__init__(", ".join(labels))
        self.labels = labels


def rotate_upstream_tokens() -> int:
    """Re-encrypt every upstream token with the first key; how many. All or none."""
    fernet = cipher()
    with transaction.atomic():
        upstreams = list(
            Upstream.objects.select_for_update().only("pk", "label", "token_encrypted")
        )
        unreadable: list[str] = []
        for upstream in upstreams:
            try:
                upstream.token_encrypted = fernet.rotate(upstream.token_encrypted.encode()).decode()
            except InvalidToken:
                unreadable.append(upstream.label)
        if unreadable:
            raise UndecryptableTokens(unreadable)
        Upstream.objects.bulk_update(upstreams, ["token_encrypted"], batch_size=500)
    return len(upstreams)
