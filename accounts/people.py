"""People who hold keys: created by operators, by `issue_key`, or once by `bootstrap`."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.db import transaction


def create_user(
    *, username: str, email: str = "", password: str | None, staff: bool = False
) -> User:
    """Create a user; `password=None` leaves one that cannot log in until a password is set.

    Raises ValidationError for a taken or malformed username, a bad email or a weak password.
    """
    user = User(username=username, email=email, is_staff=staff)
    if password is None:
        user.set_unusable_password()
    else:
        validate_password(password, user)
        user.set_password(password)
    user.full_clean()
    with transaction.atomic():
        user.save()
    return user


def create_superuser(*, username: str, password: str) -> User:
    """Create the operator's account. The password is not validated: the operator chose it."""
    user = User(username=username, is_staff=True, is_superuser=True)
    user.set_password(password)
    user.full_clean()
    with transaction.atomic():
        user.save()
    return user


def get_or_create_key_holder(*, username: str) -> tuple[User, bool]:
    """The user named `username`, made non-staff and without a password when missing."""
    user = User.objects.filter(username=username).first()
    if user is not None:
        return user, False
    return create_user(username=username, password=None), True


def has_superuser() -> bool:
    """Whether the database already has an operator: the test for a first start."""
    return User.objects.filter(is_superuser=True).exists()
