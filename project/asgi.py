"""The ASGI entry point: `/v1` and probes to the lean API handler, the rest to Django's.

Django does not speak the ASGI lifespan protocol; the dispatcher answers it and closes the
shared upstream clients on shutdown.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_asgi_application()

# Imported after Django is set up: these modules use models and settings.
from accounts.db_on_loop import close_loop_connection  # noqa: E402
from accounts.db_thread import close_db_threads, close_inline_connection  # noqa: E402
from gateway.handler import ApiHandler, is_api_path  # noqa: E402
from gateway.row_writer import rows_written  # noqa: E402
from gateway.upstream_client import close_clients  # noqa: E402
from gateway.usage import replay_journal, replay_journal_forever  # noqa: E402
from project.process_start import settle_process  # noqa: E402

api_application = ApiHandler()

Scope = dict[str, Any]


async def application(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http" and is_api_path(scope["path"]):
        await api_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)


async def _lifespan(receive: Any, send: Any) -> None:
    replayer: asyncio.Task[None] | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Rows a previous process journalled while the database was down.
            await sync_to_async(replay_journal)()
            replayer = asyncio.get_running_loop().create_task(replay_journal_forever())
            settle_process()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if replayer is not None:
                replayer.cancel()
            await close_clients()
            await rows_written()
            await close_loop_connection()
            close_db_threads()
            close_inline_connection()
            await send({"type": "lifespan.shutdown.complete"})
            return
