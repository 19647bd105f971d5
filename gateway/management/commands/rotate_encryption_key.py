"""`rotate_encryption_key`: re-encrypt every upstream token with the first key.

Rotation: prepend a new key to TOKEN_ENCRYPTION_KEY (`new,old`) on every instance, run this
once, then drop the old key. Prints how many tokens were re-encrypted.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from gateway.token_rotation import UndecryptableTokens, rotate_upstream_tokens


class Command(BaseCommand):
    help = "Re-encrypt every upstream token with the first TOKEN_ENCRYPTION_KEY; prints the count."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = rotate_upstream_tokens()
        except UndecryptableTokens as exc:
            raise CommandError(
                "No configured key opens the tokens of these upstreams: "
                f"{', '.join(exc.labels)}. Nothing was changed; add the key they were "
                "encrypted with to TOKEN_ENCRYPTION_KEY."
            ) from None
        self.stderr.write(f"Re-encrypted {count} upstream tokens with the first key.")
        self.stdout.write(str(count))
