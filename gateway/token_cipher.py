"""Upstream tokens at rest: Fernet ciphertext under TOKEN_ENCRYPTION_KEY (first key encrypts)."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def cipher() -> MultiFernet:
    return _cipher(tuple(settings.TOKEN_ENCRYPTION_KEYS))


def encrypt_token(token: str) -> str:
    return cipher().encrypt(token.encode()).decode()


def decrypt_token(ciphertext: str) -> str:
    return cipher().decrypt(ciphertext.encode()).decode()
