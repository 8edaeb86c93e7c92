"""Who is who on this box: the users whose jobs share it.

Kept apart from launcher/machine/procs.py, which needs psutil: `launch status` asks who it
runs for before anything else, and must not pay for psutil to learn it.
"""

from __future__ import annotations

import os


def current_user() -> str:
    """Return the login name of this process's user."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
