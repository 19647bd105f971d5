from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from gateway import overview_views, playground_views, probes
from gateway.api import api

urlpatterns = [
    path("v1/", api.urls),
    # The operator's overview sits in the admin: admin_view lets staff alone in.
    path("admin/overview/", admin.site.admin_view(overview_views.overview), name="overview"),
    path(
        "admin/overview/export.csv",
        admin.site.admin_view(overview_views.export_csv),
        name="overview-export",
    ),
    path("admin/", admin.site.urls),
    # Served by the lean API handler (gateway.handler.API_PATHS), like /v1.
    path("healthz", probes.healthz),
    path("readyz", probes.readyz),
    path("metrics", probes.metrics),
    # The user portal, on Django's full stack (sessions, CSRF).
    path("playground/", playground_views.playground, name="playground"),
    path("playground/chat", playground_views.chat, name="playground-chat"),
    path("playground/images", playground_views.images, name="playground-images"),
    path("", include("accounts.urls")),
]
