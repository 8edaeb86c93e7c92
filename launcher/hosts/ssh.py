"""The system's ssh client, as `launch status --hosts` runs it, and its failures in words.

The user's own ssh decides everything about the connection (their ~/.ssh/config, or the
settings file's `ssh_config` handed over as -F: users, ports, ProxyJump, agents, keys), so
a host reads here as it does in their shell. We only add what a command that must not
hang needs: BatchMode (never ask for a password or a host key) and a connect timeout.
"""

from __future__ import annotations

import math
import re

EXIT_SSH_ERROR = 255  # ssh's own exit status when the connection failed
PERMISSION = re.compile(r"Permission denied \(([^)]*)\)")


def ssh_argv(host: str, remote_command: str, timeout_s: float,
             ssh_config: str | None = None) -> list[str]:
    """Return the argv that runs remote_command on host, reading its script from stdin."""
    argv = ["ssh"]
    if ssh_config:
        argv += ["-F", ssh_config]
    return [*argv, "-T", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, math.ceil(timeout_s))}", "--", host, remote_command]


def timeout_words(timeout_s: float) -> str:
    """Return how a host that did not answer in time is described: "timeout after 5 s"."""
    return f"timeout after {timeout_s:g} s"


def why_unreachable(stderr: str, exit_code: int | None, timeout_s: float) -> str:
    """Return why ssh did not reach a host, in words, from its exit code and its stderr."""
    if exit_code is None:
        return timeout_words(timeout_s)
    text = stderr.lower()
    found = PERMISSION.search(stderr)
    if found:
        return f"Permission denied ({found.group(1)})"
    words = (
        (("could not resolve hostname", "name or service not known",
          "no address associated", "nodename nor servname"), "host unknown"),
        (("timed out", "timeout"), timeout_words(timeout_s)),
        (("connection refused",), "connection refused (no ssh server on that port)"),
        (("host key verification failed",),
         "host key not known or changed (ssh to it once by hand to check and accept it)"),
        (("no route to host", "network is unreachable"), "no route to host"),
        (("connection closed", "connection reset", "kex_exchange_identification"),
         "connection closed by the host"),
    )
    for needles, said in words:
        if any(n in text for n in needles):
            return said
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if lines:
        return lines[-1].removeprefix("ssh: ")
    return f"ssh exited {exit_code}"
