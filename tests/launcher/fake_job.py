"""A command job for the executor tests: records what it was given, then behaves as told.

Usage: python fake_job.py BEHAVIOUR SECONDS [GATE]. With GATE, it first waits until that file
exists (the test opens the gate when it has seen what it needs); a GATE that is a folder is a
gate per job: the file named by the job's id in it. It appends one JSON line per run to
$LAUNCH_JOB_DIR/runs.jsonl (its environment and the time it ran), keeps a step counter in
$LAUNCH_JOB_DIR/checkpoint (so a rerun continues where a killed run stopped), and then:
ok: writes result.json and exits 0; exit3: exits 3; raise: raises; selfkill: SIGKILLs itself;
oom-once: prints a real PyTorch out-of-memory traceback and exits 1 on its first run only.
"""

import json
import os
import signal
import sys
import time

# What PyTorch 2.5 printed when a training step ran out of memory on an 80 GB A100.
TORCH_OOM = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "fixtures", "oom",
                         "torch-2.5-backward.txt")

behaviour, seconds = sys.argv[1], float(sys.argv[2])
job_dir = os.environ["LAUNCH_JOB_DIR"]
ckpt = os.path.join(job_dir, "checkpoint")
step = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
record = {
    "pid": os.getpid(),
    "start": time.time(),
    "resumed_from": step,
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "order": os.environ.get("CUDA_DEVICE_ORDER"),
    "workers": int(os.environ["LAUNCH_NUM_WORKERS"]),
    "threads": int(os.environ["OMP_NUM_THREADS"]),
    "sweep": os.environ["LAUNCH_SWEEP_ID"],
    "seed": int(os.environ["LAUNCH_SEED"]),
    "num_gpus": os.environ.get("LAUNCH_NUM_GPUS"),
    "master": [os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")],
    "torchrun": [os.environ.get("PET_MASTER_ADDR"), os.environ.get("PET_MASTER_PORT")],
}
with open(os.path.join(job_dir, "pid"), "w") as f:  # so a test can put it in a snapshot
    f.write(str(os.getpid()))
terminated = []
signal.signal(signal.SIGTERM, lambda *_: terminated.append(1))
gate = sys.argv[3] if len(sys.argv) > 3 else None
if gate and os.path.isdir(gate):
    gate = os.path.join(gate, os.environ["LAUNCH_JOB_ID"])
while gate and not os.path.exists(gate) and not terminated:
    time.sleep(0.02)
deadline = time.time() + seconds
while time.time() < deadline and not terminated:
    time.sleep(0.02)
    step += 1
    with open(ckpt + ".tmp", "w") as f:
        f.write(str(step))
    os.replace(ckpt + ".tmp", ckpt)
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # from here on the run's outcome is fixed
record["end"] = time.time()
record["steps"] = step
record["terminated"] = bool(terminated)
with open(os.path.join(job_dir, "runs.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
if terminated:
    sys.exit(75)
if behaviour == "ok":  # as a built-in job does: the result says it finished
    with open(os.path.join(job_dir, "result.json"), "w") as f:
        json.dump({"status": "finished", "steps": step}, f)
if behaviour == "exit3":
    sys.exit(3)
if behaviour == "raise":
    raise RuntimeError("this job fails on purpose")
if behaviour == "selfkill":
    os.kill(os.getpid(), signal.SIGKILL)
if behaviour == "oom-once":
    marker = os.path.join(job_dir, "ran-out-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        with open(TORCH_OOM) as f:
            sys.stdout.write(f.read())
        sys.exit(1)
    with open(os.path.join(job_dir, "result.json"), "w") as f:
        json.dump({"status": "finished", "steps": step}, f)
