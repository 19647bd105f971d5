"""A worker's start: by the time it takes requests its views are imported and the heap
it started with is frozen out of the cyclic garbage collector's walks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

# In a fresh interpreter: the state before the ASGI lifespan's start-up and when it reports
# complete (a process that has served tests has long since imported everything).
LIFESPAN = """
import asyncio, gc, json, sys
from project.asgi import application

def state():
    return {"frozen": gc.get_freeze_count(), "api_imported": "gateway.api" in sys.modules}

async def main():
    seen = {"before": state()}
    started = asyncio.Event()
    async def receive():
        if "started" not in seen:
            seen["started"] = True
            return {"type": "lifespan.startup"}
        await started.wait()
        return {"type": "lifespan.shutdown"}
    async def send(message):
        if message["type"] == "lifespan.startup.complete":
            seen["after"] = state()
            started.set()
    await application({"type": "lifespan"}, receive, send)
    print(json.dumps(seen))

asyncio.run(main())
"""


def test_the_lifespan_start_imports_the_views_and_freezes_the_heap(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "TOKEN_ENCRYPTION_KEY": ",".join(settings.TOKEN_ENCRYPTION_KEYS),
    }
    env.pop("DATABASE_URL", None)  # the start-up's journal replay needs no database here
    run = subprocess.run(
        [sys.executable, "-c", LIFESPAN], env=env, cwd=settings.BASE_DIR,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["before"] == {"frozen": 0, "api_imported": False}
    assert seen["after"]["api_imported"] is True
    # Django, ninja, the models and the views: tens of thousands of objects.
    assert seen["after"]["frozen"] > 10_000
