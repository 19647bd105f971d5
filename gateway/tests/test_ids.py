"""Unique ids without a system call each: their shapes, and no repeats across a fork."""

from __future__ import annotations

import os
import re

from gateway.ids import hex_id, url_id, uuid4


def test_ids_have_the_shapes_of_the_secrets_calls_they_replace() -> None:
    assert re.fullmatch(r"[0-9a-f]{24}", hex_id(12))
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", url_id(18))
    assert uuid4().version == 4


def test_ids_do_not_repeat() -> None:
    drawn = {hex_id(12) for _ in range(20_000)} | {url_id(18) for _ in range(20_000)}
    assert len(drawn) == 40_000


def test_a_forked_worker_draws_other_ids_than_its_parent() -> None:
    # Servers that fork their workers after import must not give two workers the same ids.
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, (hex_id(12) + str(uuid4())).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 100).decode()
    os.close(read)
    assert theirs[:24] != hex_id(12)
    assert theirs[24:] != str(uuid4())
