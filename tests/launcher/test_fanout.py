"""Commands run at once with one deadline: replies, stdin, and what outlives the deadline."""

from __future__ import annotations

import os
import sys
import time

from launcher.hosts.fanout import EXIT_NOT_STARTED, run_all
from launcher.hosts.ssh import ssh_argv, why_unreachable

# Starts a grandchild in its process group (as ssh starts a ProxyCommand), then hangs.
HANG = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '300']); "
        "print(p.pid, flush=True); time.sleep(300)")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too; only its parent has not looked
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_replies_come_back_and_what_hangs_is_killed_with_its_children():
    replies = run_all({"echo": ["sh", "-c", "read line; echo got $line; echo err >&2; exit 3"],
                       "hang": [sys.executable, "-c", HANG],
                       "missing": ["/nonexistent/ssh"]},
                      {"echo": "hello\n"}, timeout_s=3.0)
    assert list(replies) == ["echo", "hang", "missing"]
    assert replies["echo"] == (3, "got hello\n", "err\n")
    hang = replies["hang"]
    assert hang.exit_code is None  # it did not end: killed at the deadline
    grandchild = int(hang.stdout.split()[0])
    # Its whole process group was sent SIGKILL; the grandchild dies once the kernel gets to
    # it, which on a busy box can be after run_all returns: wait for that, not a time.
    deadline = time.monotonic() + 60
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
    assert replies["missing"].exit_code == EXIT_NOT_STARTED


def test_ssh_argv_asks_for_batch_mode_and_a_connect_timeout():
    assert ssh_argv("athena", "sh -s", 2.5, "/home/u/.ssh/config") == [
        "ssh", "-F", "/home/u/.ssh/config", "-T", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=3", "--", "athena", "sh -s"]
    assert "-F" not in ssh_argv("athena", "sh -s", 5)


def test_what_ssh_says_in_words():
    said = {
        "u@127.0.0.1: Permission denied (publickey,password).\r\n":
            "Permission denied (publickey,password)",
        "ssh: Could not resolve hostname nowhere: Name or service not known\r\n": "host unknown",
        "ssh: connect to host 127.0.0.1 port 9: Connection refused\r\n":
            "connection refused (no ssh server on that port)",
        "Connection timed out during banner exchange\r\n": "timeout after 5 s",
        "Host key verification failed.\r\n":
            "host key not known or changed (ssh to it once by hand to check and accept it)",
        "kex_exchange_identification: Connection closed by remote host\r\n":
            "connection closed by the host",
        "ssh: something new\n": "something new",
        "": "ssh exited 255",
    }
    for stderr, words in said.items():
        assert why_unreachable(stderr, 255, 5.0) == words, stderr
    assert why_unreachable("", None, 2.0) == "timeout after 2 s"
