"""What a command's SWEEP[/JOB] argument picked, said aloud, and confirmed where it matters.

A command given no SWEEP takes the user's newest sweep and says which; a destructive one
(cancel, forget --delete) whose target was guessed (from a prefix, or the newest) asks
first when a person is at a terminal, unless told --yes. Without a terminal there is no one
to ask: scripts keep working as they did.
"""

from __future__ import annotations

import sys

from launcher.rundir.names import Picked, pick_target


def pick(text: str | None) -> Picked:
    """Return what text names (None: the newest sweep), saying so when it was not named."""
    picked = pick_target(text)
    if picked.newest:
        print(f"launch: no SWEEP given: {picked.paths.sweep_id}, your newest sweep "
              "(`launch ls` lists them)", file=sys.stderr)
    return picked


def at_terminal() -> bool:
    """Return whether a person can answer: stdin and stderr are a terminal."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirmed(question: str, yes: bool = False) -> bool:
    """Return True unless a person at the terminal declines question ([y/N])."""
    if yes or not at_terminal():
        return True
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def confirm_guess(picked: Picked, action: str, yes: bool) -> bool:
    """Return whether to go on with action on picked: at once when it was named in full."""
    if picked.exact:
        return True
    return confirmed(f"{action}?", yes)
