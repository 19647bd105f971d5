"""What every portal view shares: the signed-in user, typed."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest


def portal_user(request: HttpRequest) -> User:
    """The signed-in user; only called behind `login_required`."""
    user = request.user
    assert isinstance(user, User), "portal views require a signed-in user"
    return user
