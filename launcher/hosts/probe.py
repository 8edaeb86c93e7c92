"""Ask hosts for their status over ssh, all at once, and read what each one answers.

On every host one small POSIX sh script (fed to `sh -s` on stdin, so the user's login shell
only starts sh) runs the very `launch status --json` the user could run by hand. When that
does not print status JSON we read (no launch there, or another version), the same
connection asks nvidia-smi's CSV queries and ps instead (launcher/machine/smi.py), and the
answer is marked as that fallback. Nothing is installed or left running on a host.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from launcher.config.userconfig import HostSettings
from launcher.hosts.fanout import EXIT_NOT_STARTED, Reply, run_all
from launcher.hosts.ssh import EXIT_SSH_ERROR, ssh_argv, why_unreachable
from launcher.machine.smi import QUERY_APPS, QUERY_GPU, parse_owners, parse_smi
from launcher.show.hosts_view import SOURCE_LAUNCH, SOURCE_SMI, HostReport
from launcher.show.status_render import STATUS_FORMAT, status_json

REMOTE_COMMAND = "sh -s"
MARK = "@@launch-hosts "  # starts the fallback's section lines; JSON and CSV never do
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 127, 126  # what sh says for a command it cannot run
SCRIPT = """\
echo "{mark}begin"
out=$({command} status --json </dev/null)
rc=$?
case $out in
*'"format": "{format}"'*) printf '%s\\n' "$out"; exit 0;;
esac
echo "{mark}fallback $rc"
echo "{mark}user $(id -un)"
if ! command -v nvidia-smi >/dev/null 2>&1; then echo "{mark}no-nvidia-smi"; exit 0; fi
echo "{mark}gpus"
nvidia-smi --query-gpu={query_gpu} --format=csv,noheader,nounits </dev/null 2>&1
echo "{mark}gpus-exit $?"
apps=$(nvidia-smi --query-compute-apps={query_apps} --format=csv,noheader,nounits \\
  </dev/null 2>/dev/null)
echo "{mark}apps"
printf '%s\\n' "$apps"
pids=$(printf '%s\\n' "$apps" | awk -F', ' '$2 ~ /^[0-9]+$/ {{print $2}}' | sort -u \\
  | paste -sd, -)
echo "{mark}owners"
if [ -n "$pids" ]; then
  ps -o pid=,user:64= -p "$pids" 2>/dev/null || ps -o pid=,user= -p "$pids"
fi
exit 0
"""


def remote_script(command: str) -> str:
    """Return the sh script that asks one host, whose launch is `command` (a shell word list)."""
    return SCRIPT.format(command=command, format=STATUS_FORMAT, mark=MARK,
                         query_gpu=QUERY_GPU, query_apps=QUERY_APPS)


def ask_hosts(hosts: Sequence[HostSettings], ssh_config: str | None, timeout_s: float,
              clock: Callable[[], float] = time.monotonic,
              now: Callable[[], float] = time.time) -> list[HostReport]:
    """Return every host's report, in the order given, within timeout_s of the call."""
    commands = {h.name: ssh_argv(h.name, REMOTE_COMMAND, timeout_s, ssh_config) for h in hosts}
    scripts = {h.name: remote_script(h.command) for h in hosts}
    replies = run_all(commands, scripts, timeout_s, clock)
    return [read_reply(h, replies[h.name], timeout_s, now()) for h in hosts]


def read_reply(host: HostSettings, reply: Reply, timeout_s: float, now: float) -> HostReport:
    """Return what one host's reply says: its status, the fallback's, or why there is none."""
    if reply.exit_code == EXIT_NOT_STARTED and not reply.stdout:
        return HostReport(host.name, None, f"cannot run ssh here ({reply.stderr.strip()})")
    begin = f"{MARK}begin\n"
    # What a login shell's startup files print comes before the script's first line.
    _, started, body = reply.stdout.partition(begin)
    if reply.exit_code is None or reply.exit_code == EXIT_SSH_ERROR or not started:
        return HostReport(host.name, None,
                          why_unreachable(reply.stderr, reply.exit_code, timeout_s))
    if body.startswith(MARK):
        return _fallback(host, reply._replace(stdout=body), now)
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    if not isinstance(status, dict) or status.get("format") != STATUS_FORMAT:
        first = (body.strip().splitlines() or ["nothing"])[0][:80]
        return HostReport(host.name, None, f"unreadable answer from launch there: {first}")
    return HostReport(host.name, status, None, SOURCE_LAUNCH)


def _sections(stdout: str) -> dict[str, list[str]]:
    """Return marker word -> [its argument, the lines up to the next marker]."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(MARK):
            word, _, argument = line.removeprefix(MARK).partition(" ")
            lines = found.setdefault(word, [argument])
        else:
            lines.append(line)
    return found


def fallback_reason(host: HostSettings, exit_code: int, stderr: str) -> str:
    """Return why a host's launch gave no status JSON, in words."""
    if exit_code == EXIT_NOT_FOUND:
        return f"launch not found: install it there or set hosts.{host.name}.command"
    if exit_code == EXIT_NOT_EXECUTABLE:
        return f"{host.command} there is not executable"
    said = [line.strip() for line in stderr.splitlines() if line.strip()]
    ours = [line for line in said if line.startswith("launch:")]
    if ours or said:
        return f"launch there said: {(ours or said)[-1]}"
    return f"launch there printed no {STATUS_FORMAT} JSON (another version?)"


def _fallback(host: HostSettings, reply: Reply, now: float) -> HostReport:
    parts = _sections(reply.stdout)
    rc = parts.get("fallback", ["0"])[0]
    reason = fallback_reason(host, int(rc) if rc.isdigit() else 0, reply.stderr)
    if "no-nvidia-smi" in parts:
        return HostReport(host.name, None, f"{reason}; no nvidia-smi there either")
    user = (parts.get("user") or ["?"])[0] or "?"
    gpu_lines = parts.get("gpus", [""])[1:]
    gpus_exit = (parts.get("gpus-exit") or ["0"])[0]
    error, snapshot = None, None
    try:
        if gpus_exit != "0":
            raise ValueError(" ".join(line.strip() for line in gpu_lines if line.strip())
                             or f"nvidia-smi exited {gpus_exit}")
        owners = parse_owners("\n".join(parts.get("owners", [""])[1:]))
        snapshot = parse_smi("\n".join(gpu_lines), "\n".join(parts.get("apps", [""])[1:]),
                             owners, host.name)
    except ValueError as exc:
        error = f"nvidia-smi: {exc}"
    status = status_json(snapshot, (), (), now, error, host.name, user=user)
    return HostReport(host.name, status, None, SOURCE_SMI, reason)
