"""`create_user USERNAME [--email E] [--staff]`: the password comes from stdin, never argv."""

from __future__ import annotations

import getpass
import sys
from typing import Any, TextIO

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.people import create_user


class Command(BaseCommand):
    help = "Create a user. Reads the password from stdin; prints the username."
    # Let tests and scripts hand in a stream: call_command(..., stdin=io.StringIO(...)).
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="", help="The user's email address.")
        parser.add_argument("--staff", action="store_true", help="Let the user into the admin.")

    def handle(self, *args: Any, **options: Any) -> None:
        password = read_password(options.get("stdin") or sys.stdin)
        try:
            user = create_user(
                username=options["username"],
                email=options["email"],
                password=password,
                staff=options["staff"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write(f"Created {'staff ' if user.is_staff else ''}user {user.username}.")
        self.stdout.write(user.username)


def read_password(stream: TextIO) -> str:
    """The password on `stream` without its one trailing newline; refuse an empty one."""
    raw = getpass.getpass("Password: ", stream=sys.stderr) if stream.isatty() else stream.read()
    password = raw.removesuffix("\n").removesuffix("\r")
    if not password:
        raise CommandError("No password on stdin: pipe one in, e.g. `... < password.txt`.")
    return password
