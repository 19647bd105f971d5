from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and usage"
    default_auto_field = "django.db.models.BigAutoField"
