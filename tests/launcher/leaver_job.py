"""A command job that leaves a child behind: in a session of its own, its inherited files closed.

Usage: python leaver_job.py GATE. The child records when it started and when SIGTERM came in
$LAUNCH_JOB_DIR/child.jsonl, then lingers until the file GATE exists (the test opens it once
it has seen the job `stopping`), and records its end. The job's main process exits at once.
"""

import os
import subprocess
import sys
import time

CHILD = """
import json, os, signal, sys, time
path, gate = sys.argv[1], sys.argv[2]
def note(**what):
    with open(path, "a") as f:
        f.write(json.dumps({**what, "time": time.time()}) + "\\n")
terms = []
signal.signal(signal.SIGTERM, lambda *_: terms.append(1))
note(event="start", pid=os.getpid())
while not terms:
    time.sleep(0.02)
note(event="sigterm")
while not os.path.exists(gate):
    time.sleep(0.02)
note(event="end")
"""

record = os.path.join(os.environ["LAUNCH_JOB_DIR"], "child.jsonl")
subprocess.Popen([sys.executable, "-c", CHILD, record, sys.argv[1]], start_new_session=True,
                 close_fds=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(record):  # the child is up before the job ends
    time.sleep(0.01)
