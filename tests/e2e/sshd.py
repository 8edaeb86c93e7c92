"""A real OpenSSH server on a loopback port, with keys generated for one test; several of them.

Everything lives in one folder (keys, sshd_config, pid file, log); nothing in the system's ssh
configuration changes. sshd is stopped through its pid file only, never by name, so parallel
runs and a developer's own sshd are never touched.

Several "hosts" are several servers: `start_host` gives each its own environment (its NVML
snapshot, run directory, PATH), set by a profile that every session sources before the
command it was asked, as a machine's login profile would; `write_ssh_config` writes an
~/.ssh/config-style file with one alias per host, so the client side is plain `ssh ALIAS`.
"""

from __future__ import annotations

import getpass
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself, so it must be started by absolute path
START_ATTEMPTS = 3
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/hostkey
AuthorizedKeysFile {folder}/authorized_keys
PidFile {folder}/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
X11Forwarding no
LogLevel VERBOSE
{extra}"""
# sshd runs a forced command with the user's shell, after its startup files: the profile's
# PATH is the one the asked command sees (a PATH sent by the client would be reset by them).
FORCE_PROFILE = 'ForceCommand . {folder}/profile && exec sh -c "$SSH_ORIGINAL_COMMAND"\n'
SSH_CONFIG_ENTRY = """\
Host {alias}
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {key}
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
"""


class SshdError(RuntimeError):
    """sshd would not start; the message carries its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_pid(folder: Path) -> int | None:
    """Return the pid in folder/sshd.pid, or None while sshd has not written it."""
    try:
        text = (folder / "sshd.pid").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Return whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_text(folder: Path) -> str:
    """Return sshd's log, for failure messages."""
    try:
        return (folder / "sshd.log").read_text(errors="replace")
    except FileNotFoundError:
        return "(no sshd.log)"


@dataclass(frozen=True)
class LoopbackSshd:
    """A running sshd: where it listens, as whom to log in, and the key that lets us in."""

    folder: Path
    port: int
    user: str

    @property
    def key(self) -> Path:
        return self.folder / "userkey"

    def ssh_argv(self, remote_command: str) -> list[str]:
        """Return the argv of one non-interactive ssh connection running remote_command."""
        return [
            "ssh", "-F", "/dev/null", "-T", "-i", str(self.key), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", f"{self.user}@127.0.0.1", remote_command,
        ]

    def run(self, remote_command: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        """Return the finished ssh connection that ran remote_command (the shell parses it)."""
        return subprocess.run(self.ssh_argv(remote_command), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout_s)

    def log(self) -> str:
        """Return sshd's log."""
        return log_text(self.folder)

    def stop(self) -> None:
        """Stop this sshd by the pid in its pid file: SIGTERM, then SIGKILL if it lingers."""
        stop_sshd(self.folder)


def stop_sshd(folder: Path) -> None:
    """Stop the sshd whose pid file is in folder, if it runs; never look processes up by name."""
    pid = read_pid(folder)
    if pid is None or not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def generate_keys(folder: Path) -> None:
    """Write a host key, a user key, and authorized_keys holding the user key."""
    for name in ("hostkey", "userkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "launch-e2e",
                        "-f", str(folder / name)], check=True, stdin=subprocess.DEVNULL)
    (folder / "authorized_keys").write_text((folder / "userkey.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)


def wait_ready(folder: Path, port: int) -> bool:
    """Return whether sshd wrote its pid file and accepts connections before the timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = read_pid(folder)
        if pid is not None and not pid_alive(pid):
            return False
        if pid is not None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


def start_sshd(folder: Path, extra_config: str = "") -> LoopbackSshd:
    """Return a running sshd on a free loopback port, configured and keyed inside folder.

    extra_config: sshd_config lines added at the end (FORCE_PROFILE).
    """
    folder.mkdir(parents=True, exist_ok=True)
    generate_keys(folder)
    if os.geteuid() == 0:
        # the privilege-separation directory Debian's sshd insists on; absent without systemd
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for _ in range(START_ATTEMPTS):
        port = free_port()  # another process may take it first: then sshd fails and we retry
        config = CONFIG.format(port=port, folder=folder, extra=extra_config)
        (folder / "sshd_config").write_text(config)
        (folder / "sshd.pid").unlink(missing_ok=True)
        done = subprocess.run([SSHD, "-f", str(folder / "sshd_config"), "-E",
                               str(folder / "sshd.log")], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and wait_ready(folder, port):
            return LoopbackSshd(folder=folder, port=port, user=getpass.getuser())
        stop_sshd(folder)
    raise SshdError(f"sshd did not start after {START_ATTEMPTS} attempts "
                    f"(last exit {done.returncode}, {done.stderr.strip()}); its log:\n"
                    + log_text(folder))


def start_host(folder: Path, env: Mapping[str, str]) -> LoopbackSshd:
    """Return a running sshd whose every session runs with env set, as one host's profile."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile").write_text("".join(f"export {name}={shlex.quote(value)}\n"
                                            for name, value in env.items()))
    return start_sshd(folder, FORCE_PROFILE.format(folder=folder))


def write_ssh_config(path: Path, hosts: Mapping[str, tuple[int, Path]], user: str) -> Path:
    """Return path, written as ~/.ssh/config: alias -> (loopback port, key to log in with)."""
    path.write_text("\n".join(SSH_CONFIG_ENTRY.format(alias=alias, port=port, user=user, key=key)
                              for alias, (port, key) in hosts.items()))
    return path
