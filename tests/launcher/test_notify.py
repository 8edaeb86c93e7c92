"""Told when done: the `notify:` section checked, and sent by a real supervisor.

The webhook is a real HTTP server on loopback (port 0, in a thread); the command is a real
program that writes what it was given to a file. The tests wait for those to arrive, or for
the supervisor's log line, never for a time.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from rundirs import make_sweep, set_state
from test_executor import start

from launcher.cli import main
from launcher.config.sweepfile import load_sweep
from launcher.config.yamlsource import SweepFileError
from launcher.local import notify
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import read_state
from launcher.rundir.store import read_json
from launcher.rundir.sweepdir import list_sweeps, read_info

HERE = Path(__file__).parent
FAKE_JOB = HERE / "fake_job.py"
WAIT_S = 60
# A notification command: writes its argv, working directory and environment to argv[1].
PROBE = """\
import json, os, sys
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump({"argv": sys.argv[2:], "cwd": os.getcwd(), "env": dict(os.environ)}, f)
os.replace(tmp, sys.argv[1])
"""


class Hook:
    """A webhook on loopback: queues every POST (path, headers, JSON body) and answers status;
    with hang, answers nothing until closed."""

    def __init__(self, status: int = 200, hang: bool = False):
        self.posts: queue.Queue = queue.Queue()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.put((self.path, dict(self.headers), json.loads(body)))
                if hang:
                    hook.release.wait(WAIT_S)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def next_post(self) -> tuple[str, dict, dict]:
        try:
            return self.posts.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"the webhook got nothing in {WAIT_S} s")

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks():
    made: list[Hook] = []

    def make(**kwargs) -> Hook:
        made.append(Hook(**kwargs))
        return made[-1]

    yield make
    for hook in made:
        hook.close()


def sweep_file(path: Path, behaviours: list[str], seconds=(0.1,), **extra) -> Path:
    """Write a sweep of fake jobs, one per behaviour (ok, exit3, ...) and time each runs."""
    doc = {"name": "told", "job": {"command": [sys.executable, str(FAKE_JOB), "{behaviour}",
                                               "{seconds}"], "behaviour": "ok", "seconds": 0.1},
           "grid": {"behaviour": behaviours, "seconds": list(seconds)},
           "resources": {"gpus_per_job": 0, "cpu_budget": 2, "cpus_per_job": 1}, **extra}
    path.write_text(yaml.safe_dump(doc))
    return path


def log_of(sweep_id: str) -> str:
    path = SweepPaths.of(sweep_id).supervisor_log
    return path.read_text() if path.exists() else ""


def wait_log(sweep_id: str, words: str) -> str:
    """Wait for the supervisor's log to have words; return the log."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        text = log_of(sweep_id)
        if words in text:
            return text
        time.sleep(0.05)
    pytest.fail(f"the supervisor never logged {words!r}:\n{log_of(sweep_id)}")


def wait_file(path: Path) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    pytest.fail(f"{path} never appeared")


def test_a_command_is_told_when_the_sweep_ends(lab):
    probe = lab / "probe.py"
    probe.write_text(PROBE)
    told = lab / "told.json"
    path = sweep_file(lab / "s.yaml", ["ok"], (0.1, 0.2))
    sweep_id = start(path, "--notify", f"{sys.executable} {probe} {told} '{{message}}' x")
    got = wait_file(told)
    env = got["env"]
    assert env["LAUNCH_EVENT"] == "end" and env["LAUNCH_SWEEP_ID"] == sweep_id
    assert env["LAUNCH_SWEEP_NAME"] == "told"
    assert env["LAUNCH_SWEEP_COUNTS"] == "2 finished"
    assert env["LAUNCH_SWEEP_DIR"] == str(SweepPaths.of(sweep_id).root)
    assert env["LAUNCH_MESSAGE"].startswith(f"sweep {sweep_id} on ")
    assert env["LAUNCH_MESSAGE"].endswith(f" ended: 2 finished (launch results {sweep_id})")
    assert got["argv"] == [env["LAUNCH_MESSAGE"], "x"]  # {message} filled in, no shell
    assert got["cwd"] == str(lab)  # where `launch sweep` ran, as for the jobs
    assert "LAUNCH_JOB_ID" not in env
    wait_log(sweep_id, f"notified (end): command {sys.executable}")
    # the plan and the resolved file record it, so a resumed sweep tells too
    assert read_info(SweepPaths.of(sweep_id)).notify["command"][-1] == "x"
    resolved = yaml.safe_load(SweepPaths.of(sweep_id).sweep_yaml.read_text())
    assert resolved["notify"]["on"] == ["end"]


def test_a_webhook_gets_a_json_summary_of_each_failure_and_of_the_end(lab, hooks):
    hook = hooks()
    path = sweep_file(lab / "s.yaml", ["ok", "exit3"], notify={
        "webhook": f"{hook.url}/hooks/T0/secret", "on": ["end", "failure"],
        "topic": "lab-sweeps"})
    sweep_id = start(path)
    where, headers, failure = hook.next_post()
    assert where == "/hooks/T0/secret" and headers["Content-Type"] == "application/json"
    job = next(j for j in read_info(SweepPaths.of(sweep_id)).job_ids if "exit3" in j)
    assert failure["event"] == "failure" and failure["job_id"] == job
    assert failure["reason"] == "exit 3" and failure["topic"] == "lab-sweeps"
    assert failure["text"] == failure["message"] == (
        f"sweep {sweep_id}: job {job} failed: exit 3 (launch logs {sweep_id}/{job})")
    assert failure["title"] == "launch: told: a job failed"
    _, _, end = hook.next_post()
    assert end["event"] == "end" and end["counts"] == {"finished": 1, "failed": 1}
    assert end["text"].endswith(f"ended: 1 finished, 1 failed (launch results {sweep_id})")
    assert end["sweep_id"] == sweep_id and end["title"] == "launch: told ended"
    log = wait_log(sweep_id, "notified (end): webhook 127.0.0.1")
    assert "notified (failure): webhook 127.0.0.1" in log
    assert "secret" not in log  # a webhook's path is often its password
    assert hook.posts.empty()


def test_a_failing_notification_is_logged_and_never_fails_the_sweep(lab, hooks):
    hook = hooks(status=500)
    fail = [sys.executable, "-c", "import sys; print('smtp down'); sys.exit(4)"]
    path = sweep_file(lab / "s.yaml", ["ok"], (0.1, 0.2), notify={
        "command": fail, "webhook": hook.url, "on": ["end", "failure"]})
    out = subprocess.run([sys.executable, "-m", "launcher.cli", "sweep", str(path)],
                         capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert out.returncode == 0, out.stderr  # followed to its end: every job finished
    (paths,) = list_sweeps()
    sweep_id = paths.sweep_id
    hook.next_post()
    log = wait_log(sweep_id, "notification failed (end): webhook 127.0.0.1: HTTP 500")
    log = wait_log(sweep_id, "notification failed (end): command")
    assert f"notification failed (end): command {sys.executable}: exit 4: smtp down" in log
    assert [read_json(paths.job(j).state_json)["state"] for j in read_info(paths).job_ids] \
        == ["finished", "finished"]
    assert read_json(paths.supervisor_json).get("error") is None


@pytest.fixture
def told(runs) -> notify.Notifier:
    """A notifier of a hand-made sweep whose one job failed; its log lines in .lines."""
    paths = make_sweep("told-20260101-000000", [("a-00000001", {"x": 1}, {"command": ["x"]})],
                       runs)
    set_state(paths, "a-00000001", "failed", reason="exit 3")
    lines: list[str] = []
    notifier = notify.Notifier(paths, read_info(paths), lines.append)
    notifier.lines = lines
    return notifier


def test_slow_or_missing_notifications_end_within_their_timeout(told, hooks, tmp_path):
    hook = hooks(hang=True)
    pid_file = tmp_path / "pid"
    sleeper = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write("
               "str(os.getpid())); time.sleep(600)", str(pid_file)]
    told.notify = notify.Notify(command=tuple(sleeper), webhook=hook.url, timeout_s=0.5)
    told.sweep_ended(["failed"])
    assert told.lines[0] == (f"notification failed (end): command {sys.executable}: "
                             "no end after 0.5 s; killed")
    assert told.lines[1] == "notification failed (end): webhook 127.0.0.1: no answer after 0.5 s"
    with pytest.raises(ProcessLookupError):  # killed with its session, and reaped
        os.kill(int(pid_file.read_text()), 0)
    told.notify = notify.Notify(command=("no-such-program-here",), webhook="${NO_SUCH_URL_VAR}")
    told.lines.clear()
    told.sweep_ended(["failed"])
    assert told.lines == [
        "notification failed (end): command no-such-program-here: cannot run "
        "'no-such-program-here': No such file or directory",
        "notification failed (end): webhook ${NO_SUCH_URL_VAR}: not set in the environment"]


def test_a_webhook_named_by_an_environment_variable_is_read_when_sent(told, hooks,
                                                                     monkeypatch):
    hook = hooks()
    monkeypatch.setenv("LAB_HOOK", f"{hook.url}/from-env")
    told.notify = notify.Notify(webhook="${LAB_HOOK}", on=("failure",))
    told.sweep_ended(["failed"])  # not asked for: only failures
    assert told.lines == []
    told.job_state("a-00000001", read_state(told.paths.job("a-00000001")))
    where, _, body = hook.next_post()
    assert where == "/from-env" and body["event"] == "failure"
    assert body["counts"] == {"failed": 1}
    assert told.lines == ["notified (failure): webhook 127.0.0.1"]


@pytest.mark.parametrize("section, key, line, words", [
    ("notify: {comand: [echo]}", "notify.comand", 2, "unknown key (allowed: command, "
     "webhook, topic, on, timeout_s)"),
    ("notify:\n  command: echo done", "notify.command", 3, "must be a non-empty list of "
     "arguments"),
    ("notify: {command: []}", "notify.command", 2, "must be a non-empty list"),
    ("notify: {webhook: 'ftp://example.org/x'}", "notify.webhook", 2, "http(s):// URL"),
    ("notify:\n  command: [echo]\n  on: [finish]", "notify.on", 4,
     "(allowed: end, failure)"),
    ("notify: {command: [echo], timeout_s: 0}", "notify.timeout_s", 2, "must be > 0"),
    ("notify: {on: [end]}", "notify", 2, "says whom to tell: a command, a webhook or both"),
    ("notify: [echo]", "notify", 2, "must be a mapping"),
])
def test_the_notify_section_is_checked_like_every_other(tmp_path, section, key, line, words):
    path = tmp_path / "s.yaml"
    path.write_text(f"job: {{command: [echo, hi]}}\n{section}\n")
    with pytest.raises(SweepFileError) as info:
        load_sweep(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), line, key), str(err)
    assert words in str(err)


def test_a_plain_on_key_is_the_word_not_a_boolean(tmp_path):
    # YAML 1.1 reads an unquoted `on` as true; as a key it can only mean the word
    path = tmp_path / "s.yaml"
    path.write_text("job: {command: [echo, hi]}\nnotify:\n  webhook: https://ntfy.sh/\n"
                    "  topic: lab\n  on: [end, failure]\n")
    assert load_sweep(path).notify == notify.Notify(
        webhook="https://ntfy.sh/", topic="lab", on=("end", "failure"))


def test_notify_on_the_command_line_is_checked_and_not_for_a_resume(runs, capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("job: {command: [echo, hi]}\n")
    assert main(["sweep", str(path), "--notify", "mail 'unclosed", "--dry-run"]) == 2
    assert "key '--notify': cannot split \"mail 'unclosed\"" in capsys.readouterr().err
    assert main(["sweep", "--resume", "x", "--notify", "true"]) == 2
    assert "--notify goes with a sweep file; a resume keeps the sweep's own" in (
        capsys.readouterr().err)
    assert load_sweep(path, ["notify.command=[echo, done]"]).notify.command == ("echo", "done")


def test_slurm_sweeps_say_they_send_no_notification(runs, capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("job: {command: [echo, hi]}\nnotify: {command: [echo, done]}\n")
    assert main(["sbatch", str(path), "-o", str(tmp_path / "s.sbatch")]) == 0
    assert f"launch: warning: {notify.SLURM_NOTE}" in capsys.readouterr().err
