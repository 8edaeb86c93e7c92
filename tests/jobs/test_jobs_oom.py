"""A job that runs out of GPU memory mid-epoch writes its last finished step and exits
EXIT_OOM; run again, it resumes from that step (tests/launcher/test_memory.py runs it under a
supervisor and checks its weights against an uninterrupted run's)."""

import torch
from jobhelpers import run_job, tiny_spec

from jobs.train import TEST_OOM_ENV
from launcher.contract import EXIT_OOM, out_of_memory_line

SPEC = tiny_spec(batch_size=8, epochs=2, optimizer={"name": "sgd", "lr": 0.01}, repeat={})
OOM_STEP = 60  # 45 batches an epoch: epoch 2, batch 15


def test_out_of_memory_mid_epoch_checkpoints_the_last_step_and_resumes_there(tmp_path):
    code, out, err = run_job(SPEC, tmp_path / "job", **{TEST_OOM_ENV: str(OOM_STEP)})
    assert code == EXIT_OOM, (out, err)
    assert f"checkpoint at epoch 2 batch 15 (step {OOM_STEP}) written" in out
    assert out_of_memory_line(out) is not None  # what a command job's log would say, too
    assert not (tmp_path / "job" / "result.json").exists()
    state = torch.load(tmp_path / "job" / "checkpoint.pt", weights_only=False)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 15, OOM_STEP)
    # Run again as the launcher does, the hook still set: this run begins at that step, so
    # the step runs this time.
    code, out, err = run_job(SPEC, tmp_path / "job", **{TEST_OOM_ENV: str(OOM_STEP)})
    assert code == 0, (out, err)
    assert "resuming at epoch 2 batch 15" in out
