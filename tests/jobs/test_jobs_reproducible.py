"""Same spec and seed -> same weights and metrics, whatever the workers."""

import pytest
from jobhelpers import finish, metrics, result, start_job, tiny_spec

from jobs.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four real processes at once (one thread each; the CLI is the contract), returns DIRs.

    a and b: the same spec and seed, b with 2 DataLoader workers ($LAUNCH_NUM_WORKERS);
    c: another seed; dev: the device loader.  Augmentation is on: its draws are keyed by
    (seed, epoch, sample index), not by worker RNG state.
    """
    root = tmp_path_factory.mktemp("runs")
    spec = tiny_spec(augment=True)
    procs = {
        "a": start_job(spec, root / "a", LAUNCH_NUM_WORKERS="0"),
        "b": start_job(spec, root / "b", LAUNCH_NUM_WORKERS="2"),
        "c": start_job(dict(spec, seed=1), root / "c", LAUNCH_NUM_WORKERS="0"),
        # Same thread count for all: on CPU it can change float summation order.
        "dev": start_job(dict(spec, loader="device"), root / "dev"),
    }
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0, (name, out, err)
    return {name: root / name for name in procs}


def test_same_seed_same_hash_and_metrics_other_seed_other_hash(runs):
    a, b, c = (result(runs[n]) for n in "abc")
    assert a["weights_sha256"] == b["weights_sha256"]
    assert metrics(runs["a"]) == metrics(runs["b"]) and len(metrics(runs["a"])) == 2
    assert (a["test_accuracy"], a["test_loss"]) == (b["test_accuracy"], b["test_loss"])
    assert c["weights_sha256"] != a["weights_sha256"]
    assert c["derived_seeds"] != a["derived_seeds"] and c["seed"] == 1


def test_num_workers_and_loader_do_not_change_the_weights(runs):
    a, b = result(runs["a"]), result(runs["b"])
    assert (a["env"]["num_workers"], b["env"]["num_workers"]) == (0, 2)
    assert a["weights_sha256"] == b["weights_sha256"]
    # The device loader builds the same uint8 batches on the device, so it matches too.
    assert result(runs["dev"])["weights_sha256"] == a["weights_sha256"]


def test_result_json_holds_the_contract_keys(tmp_path):
    res = train(tiny_spec(epochs=1), tmp_path, log=lambda line: None)
    for key in ("status", "seed", "derived_seeds", "test_accuracy", "test_loss",
                "per_class_accuracy", "epochs_done", "wall_time_s", "device", "gpu_uuid",
                "num_parameters", "weights_sha256", "env", "spec"):
        assert key in res
    assert res["status"] == "finished" and res["epochs_done"] == 1 and res["device"] == "cpu"
    assert len(res["per_class_accuracy"]) == 10
    assert set(res["derived_seeds"]) >= {"init", "data_order", "augment", "noise", "repeat"}
    for key in ("torch", "cuda", "cudnn", "CUDA_VISIBLE_DEVICES", "num_threads", "num_workers",
                "hostname"):
        assert key in res["env"]
    line = metrics(tmp_path, drop_timing=False)[0]
    for key in ("epoch", "epochs", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                "lr", "images_per_s", "elapsed_s", "time"):
        assert key in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.pt", "metrics.jsonl", "result.json"]
