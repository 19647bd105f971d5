"""`/keys/`: the user's keys; create within the policy, show a secret once, revoke, rotate."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import KeyForm
from accounts.keys import KeyNotFound, KeyQuotaExceeded
from accounts.models import ApiKey
from accounts.portal_keys import (
    KeyNotActive,
    PolicyRefused,
    create_own_key,
    is_active,
    key_policy,
    own_keys,
    revoke_own_key,
    rotate_own_key,
)
from accounts.views_portal import portal_user


def _page(
    request: HttpRequest, form: KeyForm, *, secret: str = "", shown: ApiKey | None = None
) -> HttpResponse:
    user = portal_user(request)
    now = timezone.now()
    keys = own_keys(user=user)
    context: dict[str, Any] = {
        "form": form,
        "policy": form.policy,
        "keys": [(key, is_active(key, now)) for key in keys],
        "now": now,
        "secret": secret,
        "shown": shown,
    }
    response = render(request, "accounts/keys.html", context, status=400 if form.errors else 200)
    if secret:
        # The secret is in this page only: never cached, never in the session.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    policy = key_policy()
    if request.method != "POST":
        return _page(request, KeyForm(policy=policy))
    form = KeyForm(request.POST, policy=policy)
    if not form.is_valid():
        return _page(request, form)
    try:
        key, secret = create_own_key(
            user=portal_user(request), request=form.key_request(), policy=policy
        )
    except PolicyRefused as refused:
        form.add_error(refused.field if refused.field in form.fields else None, str(refused))
        return _page(request, form)
    except KeyQuotaExceeded:
        form.add_error(None, "You hold as many keys as the operator allows: revoke one first.")
        return _page(request, form)
    return _page(request, KeyForm(policy=policy), secret=secret, shown=key)


@login_required
@require_POST
def revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    try:
        key = revoke_own_key(user=portal_user(request), prefix=prefix)
    except (ApiKey.DoesNotExist, KeyNotFound):
        raise Http404("No such key.") from None
    messages.success(request, f"Key {key.prefix}… revoked: it stopped working.")
    return redirect("portal:keys")


@login_required
@require_POST
def rotate(request: HttpRequest, prefix: str) -> HttpResponse:
    policy = key_policy()
    try:
        key, secret = rotate_own_key(user=portal_user(request), prefix=prefix, policy=policy)
    except (ApiKey.DoesNotExist, KeyNotFound):
        raise Http404("No such key.") from None
    except KeyNotActive:
        messages.error(request, f"Key {prefix}… is revoked or expired: it cannot be rotated.")
        return redirect("portal:keys")
    return _page(request, KeyForm(policy=policy), secret=secret, shown=key)
