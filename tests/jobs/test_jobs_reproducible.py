"""Issue 2, items 1 and 2: same spec and seed -> same weights and metrics, whatever the workers."""

from jobhelpers import finish, metrics, result, start_job, tiny_spec

from jobs.train import train


def test_same_seed_same_hash_and_metrics_other_seed_other_hash(tmp_path):
    spec = tiny_spec(augment=True)
    # Three real processes at once (one thread each): the CLI is the contract.
    procs = {name: start_job(s, tmp_path / name) for name, s in
             [("a", spec), ("b", spec), ("c", tiny_spec(augment=True, seed=1))]}
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0, (name, out, err)
    a, b, c = (result(tmp_path / n) for n in "abc")
    assert a["weights_sha256"] == b["weights_sha256"]
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert len(metrics(tmp_path / "a")) == 2
    assert (a["test_accuracy"], a["test_loss"]) == (b["test_accuracy"], b["test_loss"])
    assert c["weights_sha256"] != a["weights_sha256"]
    assert c["derived_seeds"] != a["derived_seeds"] and c["seed"] == 1


def test_num_workers_and_loader_do_not_change_the_weights(tmp_path):
    # Augmentation on: its draws are keyed by (seed, epoch, sample), not by worker RNG state.
    spec = tiny_spec(augment=True, epochs=1, val_size=0.0)
    procs = {
        "w0": start_job(spec, tmp_path / "w0", LAUNCH_NUM_WORKERS="0"),
        "w2": start_job(spec, tmp_path / "w2", LAUNCH_NUM_WORKERS="2"),
        # The device loader builds the same uint8 batches, so it matches too. (Same thread
        # count for all: on CPU, the number of threads can change float summation order.)
        "dev": start_job(dict(spec, loader="device"), tmp_path / "dev"),
    }
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0, (name, out, err)
    w0, w2 = result(tmp_path / "w0"), result(tmp_path / "w2")
    assert (w0["env"]["num_workers"], w2["env"]["num_workers"]) == (0, 2)
    assert w0["weights_sha256"] == w2["weights_sha256"]
    assert result(tmp_path / "dev")["weights_sha256"] == w0["weights_sha256"]


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
