"""On Slurm, a job that dies of CUDA out-of-memory is requeued by its own task, without
spending max_retries, and the next run of the same array task finishes."""

from __future__ import annotations

import pytest
from slurmhelpers import (
    cli,
    slurm_word,
    started_again,
    states,
    sweep_path,
    wait_ended,
    wait_for,
    write_sweep,
)

pytestmark = pytest.mark.slurm

# Prints PyTorch's words on its first run only (a marker file in its job folder says which).
OOM_ONCE = (
    "import os, sys\n"
    "marker = os.path.join(os.environ['LAUNCH_JOB_DIR'], 'ran-out-once')\n"
    "first = not os.path.exists(marker)\n"
    "open(marker, 'a').close()\n"
    "print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 '\n"
    "      'has a total capacity of 15.77 GiB of which 1.06 GiB is free.' if first else 'ok')\n"
    "sys.exit(1 if first else 0)\n"
)


def test_an_out_of_memory_end_is_requeued_by_the_task_itself(cluster, capsys, tmp_path):
    script = tmp_path / "oom_once.py"
    script.write_text(OOM_ONCE)
    text = (f"name: oom\njob: {{command: [python3, {script}], seed: 0}}\nmax_retries: 0\n"
            "resources: {gpus_per_job: 0, cpus_per_job: 1}\n"
            "slurm: {time_min: 10, cpus_per_task: 1}\n")
    code, out, err = cli(capsys, "sweep", write_sweep(tmp_path, "oom", text), "--executor",
                         "slurm")
    assert code == 0, err
    path = sweep_path(cluster, out)
    (job_id,) = states(path)
    st = wait_for(lambda: (s := states(path)[job_id]).get("state") == "oom" and s, 120,
                  "the oom")
    assert st["oom_retries"] == 1 and st["reason"].startswith("oom"), st
    assert "retry 1/2" in st["reason"], st
    slurm_id = st["slurm_job_id"]
    wait_for(lambda: slurm_word(slurm_id).startswith("PENDING"), 60, "requeued")
    wait_for(lambda: started_again(slurm_id), 180, "started again", poll_s=0.5)
    ended = wait_ended(path)[job_id]
    assert ended["state"] == "finished", ended
    assert ended["runs"] == 2 and ended["oom_retries"] == 1, ended  # max_retries 0 not spent
    log = (path / "jobs" / job_id / "stdout.log").read_text()
    assert log.count("CUDA out of memory") == 1 and log.rstrip().endswith("ok"), log[-2000:]
