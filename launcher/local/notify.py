"""Telling the user that a sweep ended, or that one of its jobs failed: a command, a webhook.

The supervisor hands every state it writes to `Notifier.job_state` (a job that failed for
good is news when `on` has `failure`) and calls `Notifier.sweep_ended` after its last job
ended, or `supervisor_stopped` when it stops on an error. What to do is the sweep's
`notify:` section (launcher/config/sweepfile.py: Notify), as its plan records it. Each
notification runs within its timeout_s and never raises: one that fails is a line in the
supervisor's log, and the sweep goes on, or ends, as it would have.

A command gets the event in its environment (LAUNCH_EVENT, LAUNCH_SWEEP_ID,
LAUNCH_SWEEP_COUNTS, LAUNCH_SWEEP_DIR, LAUNCH_MESSAGE, ...) and in placeholders of its
argv ({message}, {sweep_id}, ...); it is run without a shell, like a job. A webhook gets a
JSON object POSTed whose `text` is what Slack's incoming webhooks show and whose `message`,
`title` (and `topic`, when set) are what ntfy's JSON publishing reads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from launcher import contract
from launcher.config.sweepfile import Notify
from launcher.rundir.layout import SweepPaths
from launcher.rundir.state import FAILED, STATES, TIMEOUT, JobState, read_state
from launcher.rundir.sweepdir import SweepInfo, read_info

END, FAILURE = "end", "failure"
FAILED_STATES = (FAILED, TIMEOUT)  # a job that will not finish without the user
WORDS = {FAILED: "failed", TIMEOUT: "timed out"}
ENV_EVENT = "LAUNCH_EVENT"  # end | failure
ENV_SWEEP_NAME = "LAUNCH_SWEEP_NAME"
ENV_SWEEP_COUNTS = "LAUNCH_SWEEP_COUNTS"  # "3 finished, 1 failed"
ENV_SWEEP_DIR = "LAUNCH_SWEEP_DIR"  # the run directory: every job's results and logs
ENV_MESSAGE = "LAUNCH_MESSAGE"  # the one line a webhook's text has too
ENV_JOB_REASON = "LAUNCH_JOB_REASON"  # failure: how the job ended, "exit 3"
OUTPUT_SHOWN_CHARS = 200  # of a failed command's output, in the supervisor's log
SLURM_NOTE = ("notify: is not sent for Slurm sweeps yet: no process of ours sees a Slurm "
              "sweep end; Slurm can mail you (slurm.sbatch_lines: ['#SBATCH --mail-type=END,"
              "FAIL', '#SBATCH --mail-user=...'])")


class Event(NamedTuple):
    """What happened, in the words every channel sends."""

    kind: str  # END | FAILURE
    sweep_id: str
    name: str
    sweep_dir: str
    counts: dict  # state -> how many jobs are in it
    title: str
    message: str
    job_id: str | None = None
    job_dir: str | None = None
    reason: str | None = None

    def counts_text(self) -> str:
        """Return the counts as status writes them: "3 finished, 1 failed"."""
        return ", ".join(f"{n} {state}" for state, n in self.counts.items())


def count_states(states: Sequence[str]) -> dict[str, int]:
    """Return state -> how many, in the order status counts them."""
    return {s: states.count(s) for s in STATES if s in states}


def end_event(paths: SweepPaths, info: SweepInfo, states: Sequence[str],
              error: str | None = None) -> Event:
    """Return the event of a sweep that ended (or whose supervisor stopped on error)."""
    counts = count_states(states)
    event = Event(END, info.sweep_id, info.name, str(paths.root), counts, "", "")
    host = socket.gethostname()
    if error is None:
        title = f"launch: {info.name} ended"
        message = (f"sweep {info.sweep_id} on {host} ended: {event.counts_text()} "
                   f"(launch results {info.sweep_id})")
    else:
        title = f"launch: {info.name} stopped"
        message = f"sweep {info.sweep_id} on {host} stopped: {error}"
    return event._replace(title=title, message=message)


def failure_event(paths: SweepPaths, info: SweepInfo, job_id: str, state: JobState,
                  states: Sequence[str]) -> Event:
    """Return the event of a job that failed for good."""
    reason = state.reason or state.state
    message = (f"sweep {info.sweep_id}: job {job_id} {state.state}: {reason} "
               f"(launch logs {info.sweep_id}/{job_id})")
    title = f"launch: {info.name}: a job {WORDS.get(state.state, state.state)}"
    return Event(FAILURE, info.sweep_id, info.name, str(paths.root), count_states(states),
                 title, message, job_id, str(paths.job(job_id).dir), reason)


def command_env(base: Mapping[str, str], event: Event) -> dict[str, str]:
    """Return the environment of a notification command: base plus the event."""
    env = dict(base)
    env.update({ENV_EVENT: event.kind, contract.ENV_SWEEP_ID: event.sweep_id,
                ENV_SWEEP_NAME: event.name, ENV_SWEEP_COUNTS: event.counts_text(),
                ENV_SWEEP_DIR: event.sweep_dir, ENV_MESSAGE: event.message})
    if event.job_id is not None:
        env.update({contract.ENV_JOB_ID: event.job_id, contract.ENV_JOB_DIR: event.job_dir or "",
                    ENV_JOB_REASON: event.reason or ""})
    return env


def command_argv(command: Sequence[str], event: Event) -> list[str]:
    """Return the command with its placeholders ({message}, {sweep_id}, ...) filled in."""
    values = {"event": event.kind, "sweep_id": event.sweep_id, "name": event.name,
              "counts": event.counts_text(), "sweep_dir": event.sweep_dir,
              "message": event.message, "job_id": event.job_id or ""}
    pattern = re.compile(r"\{(" + "|".join(values) + r")\}")
    return [pattern.sub(lambda m: values[m.group(1)], arg) for arg in command]


def webhook_body(event: Event, topic: str | None) -> bytes:
    """Return the JSON a webhook gets: Slack reads `text`; ntfy `topic`, `title`, `message`."""
    body = {"text": event.message, "title": event.title, "message": event.message,
            "event": event.kind, "sweep_id": event.sweep_id, "name": event.name,
            "counts": event.counts, "sweep_dir": event.sweep_dir}
    if event.job_id is not None:
        body.update(job_id=event.job_id, reason=event.reason)
    if topic is not None:
        body["topic"] = topic
    return json.dumps(body).encode()


def run_command(argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
                timeout_s: float) -> str | None:
    """Return what went wrong running a notification command, or None when it exited 0."""
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as err:
        return f"cannot run {argv[0]!r}: {err.strerror or err}"
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: nothing of it lingers
        proc.communicate()
        return f"no end after {timeout_s:g} s; killed"
    if proc.returncode == 0:
        return None
    last = out.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
    return f"exit {proc.returncode}: {last[0][:OUTPUT_SHOWN_CHARS]}"


def webhook_url(url: str, env: Mapping[str, str]) -> str | None:
    """Return the URL to post to: as written, or `${NAME}` read from env (None if unset)."""
    match = re.fullmatch(r"\$\{(\w+)\}", url)
    return env.get(match.group(1)) if match else url


def post_webhook(url: str, body: bytes, timeout_s: float) -> str | None:
    """Return what went wrong posting body to url, or None when it answered 2xx."""
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "launch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(4096)
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:
        return f"{err.reason}"
    except TimeoutError:
        return f"no answer after {timeout_s:g} s"
    except (OSError, ValueError, http.client.HTTPException) as err:
        return f"{type(err).__name__}: {err}"
    return None


def host_of(url: str) -> str:
    """Return a URL's host, the part of it a log may show (the path of many is a secret)."""
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "?"


class Notifier:
    """Sends a sweep's notifications as its `notify:` section says; quiet without one."""

    def __init__(self, paths: SweepPaths, info: SweepInfo, log: Callable[[str], None]):
        self.paths, self.info, self.log = paths, info, log
        self.notify = Notify.from_json(info.notify) if info.notify else None

    def job_state(self, job_id: str, state: JobState) -> None:
        """Notify that a job failed, if this state says so and `on` has failure."""
        if self.notify is None or FAILURE not in self.notify.on:
            return
        if state.state in FAILED_STATES:
            self.send(failure_event(self.paths, self.info, job_id, state, self.states()))

    def sweep_ended(self, states: Sequence[str], error: str | None = None) -> None:
        """Notify that the sweep ended with its jobs in these states, if `on` has end."""
        if self.notify is not None and END in self.notify.on:
            self.send(end_event(self.paths, self.info, states, error))

    def states(self) -> list[str]:
        """Return the state of every job of the sweep, in plan order."""
        return [read_state(self.paths.job(j)).state for j in self.info.job_ids]

    def send(self, event: Event) -> None:
        """Send the event on every channel; log each outcome, raise nothing."""
        notify = self.notify
        assert notify is not None
        channels = []
        if notify.command:
            argv = command_argv(notify.command, event)
            env = command_env(os.environ, event)
            channels.append((f"command {argv[0]}", lambda: run_command(
                argv, env, self.info.cwd, notify.timeout_s)))
        if notify.webhook:
            url = webhook_url(notify.webhook, os.environ)
            channels.append((f"webhook {notify.webhook if url is None else host_of(url)}",
                             lambda: "not set in the environment" if url is None else
                             post_webhook(url, webhook_body(event, notify.topic),
                                          notify.timeout_s)))
        for what, send in channels:
            try:
                problem = send()
            except Exception as err:  # a notification must never take the sweep down
                problem = f"{type(err).__name__}: {err}"
            if problem is None:
                self.log(f"notified ({event.kind}): {what}")
            else:
                self.log(f"notification failed ({event.kind}): {what}: {problem}")


def supervisor_stopped(paths: SweepPaths, error: str, log: Callable[[str], None]) -> None:
    """Notify, if the sweep asks for it at its end, that its supervisor stopped on error."""
    try:
        notifier = Notifier(paths, read_info(paths), log)
        notifier.sweep_ended(notifier.states(), error)
    except Exception as err:  # the plan may be what is wrong, or the disk: stop as before
        log(f"notification failed (end): {type(err).__name__}: {err}")
