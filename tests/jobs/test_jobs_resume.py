"""A killed or signalled job, restarted on its DIR, ends with the same weights."""

import signal
import time

import pytest
import torch
from jobhelpers import finish, metrics, result, run_job, start_job, tiny_spec

from jobs.train import train

# 160 batches per epoch: after epoch 1's checkpoint, two more epochs leave time to SIGKILL.
# Layer repetition and gradient noise draw from their own generators every step: a resume
# that lost their state would end with other weights.
SPEC = tiny_spec(synthetic={"train_size": 1600}, val_size=0.2, batch_size=8, epochs=3,
                 augment=True, optimizer={"name": "sgd", "lr": 0.01}, repeat={},
                 grad_noise={"mode": "relative"})


def wait_for(predicate, proc, timeout_s=90.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, "job ended before the test could interrupt it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Returns a function giving the uninterrupted run's DIR; the run starts now, in parallel."""
    out = tmp_path_factory.mktemp("reference") / "ref"
    proc = start_job(SPEC, out)

    def wait():
        if proc.returncode is None:
            assert finish(proc)[0] == 0
        return out

    yield wait
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigkill_after_an_epoch_then_restart_matches_uninterrupted(tmp_path, reference):
    killed = start_job(SPEC, tmp_path / "job")
    # The epoch's checkpoint is written right after its metrics line: the first one on disk.
    wait_for(lambda: (tmp_path / "job" / "checkpoint.pt").exists(), killed)
    killed.kill()  # SIGKILL: no handler runs, only the epoch checkpoint on disk survives
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "job" / "result.json").exists()
    code, out, err = run_job(SPEC, tmp_path / "job")
    assert code == 0, (out, err)
    assert "resuming at epoch" in out
    ref = reference()
    assert result(tmp_path / "job")["weights_sha256"] == result(ref)["weights_sha256"]
    assert metrics(tmp_path / "job") == metrics(ref)  # one line per epoch, no duplicates


def test_sigterm_and_sigusr2_checkpoint_mid_epoch_exit_75_and_resume(tmp_path, reference):
    procs = {"term": start_job(SPEC, tmp_path / "term"), "usr2": start_job(SPEC, tmp_path / "usr2")}
    for name, sig in (("term", signal.SIGTERM), ("usr2", signal.SIGUSR2)):
        # The CLI's first line comes once its handlers are in place, before the slow setup: a
        # signal now is kept until the first batch ends, so the checkpoint is exactly mid-epoch.
        assert procs[name].stdout.readline().startswith("job: ")
        procs[name].send_signal(sig)
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 75, (name, out, err)
        assert "preempted" in out
        state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)
        assert (state["epoch"], state["batch"]) == (0, 1)
        code, out, err = run_job(SPEC, tmp_path / name)
        assert code == 0, (name, out, err)
        assert "resuming at epoch 1 batch 1" in out
    ref = reference()
    for name in ("term", "usr2"):
        assert result(tmp_path / name)["weights_sha256"] == result(ref)["weights_sha256"]
        # The checkpoint carries the interrupted epoch's running sums: same metrics too.
        assert metrics(tmp_path / name) == metrics(ref)


def test_finished_dir_reruns_as_a_no_op_and_another_spec_is_refused(tmp_path):
    small = tiny_spec(epochs=1, synthetic={"train_size": 100, "test_size": 20})
    lines = []
    first = train(small, tmp_path / "job", log=lines.append)
    again = train(small, tmp_path / "job", log=lines.append)  # e.g. a requeue after the end
    assert "training already done" in lines[-2]
    assert again["weights_sha256"] == first["weights_sha256"]
    assert len(metrics(tmp_path / "job")) == 1
    code, out, err = run_job(dict(small, seed=7), tmp_path / "job")
    assert code == 2
    assert "checkpoint.pt" in err and "seed" in err and "fresh --out" in err
    assert result(tmp_path / "job")["seed"] == 0


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_broken_checkpoint_falls_back_to_the_previous_one_or_says_how_to_restart(
        tmp_path, damage):
    spec = tiny_spec(epochs=2)
    out = tmp_path / "job"
    whole = train(spec, out, log=lambda _line: None)
    ckpt, previous = out / "checkpoint.pt", out / "checkpoint.prev.pt"
    assert previous.exists()  # every save keeps the one it replaces: epoch 1's here
    epoch_1 = previous.read_bytes()

    def break_it() -> None:
        data = ckpt.read_bytes()
        ckpt.write_bytes({"empty": b"", "garbage": b"not a checkpoint",
                          "truncated": data[: len(data) // 2]}[damage])
        (out / "result.json").unlink(missing_ok=True)

    # A torn last checkpoint: the job goes back to the previous one, says so, and ends with
    # the weights of the run that was never interrupted.
    break_it()
    lines: list[str] = []
    again = train(spec, out, log=lines.append)
    assert any("continuing from the previous one (epoch 1" in line for line in lines), lines
    assert again["weights_sha256"] == whole["weights_sha256"]
    # Nothing readable left: one line naming the file and the way out, exit 2.
    break_it()
    previous.write_bytes(epoch_1[:10])
    (out / ".checkpoint.pt.x1y2").write_bytes(b"a kill during a save left this")
    code, _, err = run_job(spec, out)
    assert code == 2 and err.count("\n") == 1, err
    assert str(ckpt) in err and "--restart JOB" in err
    assert not (out / ".checkpoint.pt.x1y2").exists()  # stray temp files are cleaned
