"""Once per worker process, before its first request: the views imported and the start-up
heap set aside from the cyclic garbage collector.

Django imports the URLconf, and through it every view module, on the first request, which
that request then pays for. And each full collection of the cyclic garbage collector walks
every object of the process, most of them the modules, classes and settings loaded at start
that live as long as the process does: with 64 streams in flight a full collection stopped
the event loop for 55-126 ms. `gc.freeze()` moves every object that exists at that point out
of the collector's sight (reference counting still frees them); what requests allocate is
collected as before.
"""

from __future__ import annotations

import gc

from django.urls import get_resolver

_settled = False


def settle_process() -> None:
    """Import the views and freeze the start-up heap; once per process."""
    global _settled
    if _settled:
        return
    _settled = True
    get_resolver().url_patterns  # noqa: B018 (imports the URLconf and its views)
    gc.collect()  # garbage of the imports is freed, not frozen for good
    gc.freeze()
