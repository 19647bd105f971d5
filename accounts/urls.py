"""The user portal (DESIGN.md section 9); the playground's routes live with the gateway."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views, views_keys, views_usage

app_name = "portal"

urlpatterns = [
    path("", views.overview, name="overview"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("keys/", views_keys.keys, name="keys"),
    path("keys/<str:prefix>/revoke/", views_keys.revoke, name="key-revoke"),
    path("keys/<str:prefix>/rotate/", views_keys.rotate, name="key-rotate"),
    path("usage/", views_usage.usage, name="usage"),
    path("usage/export.csv", views_usage.export_csv, name="usage-export"),
]
