"""`make run` on a fresh data directory: migrates, prints the admin password and a key, serves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BASE_DIR, Fake, free_port


def _read_until_served(process: subprocess.Popen[bytes], url: str) -> str:
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        output += process.stdout.read() or b""
        try:
            httpx.get(url, timeout=1)
            return (output + (process.stdout.read() or b"")).decode()
        except httpx.TransportError:
            assert process.poll() is None, output.decode()
            time.sleep(0.2)
    raise AssertionError("make run did not serve:\n" + output.decode())


def test_make_run_prints_the_admin_password_and_a_working_key(
    tmp_path: Path, fake_server: Fake
) -> None:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "TOKEN_ENCRYPTION_KEY"}
    }
    env.update(VAR_DIR=str(tmp_path), PUTER_API_BASE=fake_server.url, PUTER_TOKENS="ok-demo")
    command = ["make", "run", f"PORT={port}", f"VENV={sys.prefix}", "PYTHON=" + sys.executable]
    process = subprocess.Popen(
        command, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        output = _read_until_served(process, f"http://127.0.0.1:{port}/v1/models")
        password = re.search(r"^Admin password: (\S+)$", output, re.MULTILINE)
        key = re.search(r"^API key: (sk-[A-Za-z0-9_-]{48})$", output, re.MULTILINE)
        assert password is not None, output
        assert key is not None, output
        assert (tmp_path / "db.sqlite3").exists()
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key.group(1)}"},
            json={"model": "gpt-5-nano", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


@pytest.mark.usefixtures("fake_server")
def test_second_start_prints_neither_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["VAR_DIR"] = str(tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    first = subprocess.run(
        [*manage, "bootstrap"], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
    )
    second = subprocess.run(
        [*manage, "bootstrap"], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
    )
    assert first.stdout.startswith("Admin password: ")
    assert "API key: sk-" in first.stdout
    assert second.stdout == ""
