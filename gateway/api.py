from __future__ import annotations

from ninja import NinjaAPI

api = NinjaAPI(title="puter-gateway", version="1", urls_namespace="v1")
