"""Errors a user can fix; the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A problem with the user's input or machine, shown without a traceback."""

    exit_code = 2
