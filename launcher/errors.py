"""Errors a user can fix, and the exit codes of the `launch` command line."""

EXIT_USER_ERROR = 2  # a user error: one line, `launch: error: ...`
EXIT_INTERRUPTED = 130  # Ctrl-C


class UserError(Exception):
    """A problem with the user's input or machine, shown without a traceback."""

    exit_code = EXIT_USER_ERROR
