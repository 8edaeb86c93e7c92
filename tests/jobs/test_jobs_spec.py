"""jobs.spec: defaults, and one error naming the key and every allowed option."""

import subprocess
import sys

import pytest

from jobs.spec import MODEL_NAMES, SPEC_SCHEMA, SpecError, schema_lines, validate_spec


def error_for(job) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_spec(job)
    return info.value


def test_empty_spec_gets_seed_000_defaults():
    spec = validate_spec({})
    assert spec["model"] == "resnet9" and spec["epochs"] == 22 and spec["batch_size"] == 500
    assert spec["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9, "nesterov": True,
                                 "weight_decay": 0.001, "betas": [0.9, 0.999]}
    assert spec["repeat"] is None and spec["grad_noise"] is None
    assert set(spec) == set(SPEC_SCHEMA)
    assert validate_spec(spec) == spec  # idempotent: the launcher may validate twice


def test_unknown_key_lists_every_allowed_key():
    err = error_for({"optimizer": {"lr": 0.1, "lerning_rate": 0.1}})
    assert err.key == "optimizer.lerning_rate"
    for key in ("betas", "lr", "momentum", "name", "nesterov", "weight_decay"):
        assert key in err.message
    top = error_for({"modle": "alexnet"})
    assert top.key == "modle" and all(k in top.message for k in SPEC_SCHEMA)


def test_bad_enum_lists_every_allowed_value():
    err = error_for({"model": "vgg16"})
    assert err.key == "model" and "'vgg16'" in err.message
    assert all(name in err.message for name in MODEL_NAMES)
    err = error_for({"members": ["alexnet", "ensemble"]})
    assert err.key == "members[1]"


@pytest.mark.parametrize("job, key, says", [
    ({"optimizer": {"lr": "abc"}}, "optimizer.lr", "a number > 0 and <= 10, got 'abc'"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr", "> 0"),
    ({"epochs": 2.5}, "epochs", "an integer >= 1"),
    ({"epochs": True}, "epochs", "an integer"),
    ({"augment": "yes"}, "augment", "true or false"),
    ({"val_size": 1.0}, "val_size", "< 1"),
    ({"optimizer": {"betas": [0.9]}}, "optimizer.betas", "two numbers"),
    ({"repeat": {"min": 0}, "model": "tutorial_cnn"}, "repeat.min", ">= 1"),
    ({"grad_noise": "on"}, "grad_noise", "or null"),
    ({"stochastic_depth": {"p_L": 0}}, "stochastic_depth.p_L", "> 0"),
    # absurd values are refused at validation, not discovered as a crash mid-sweep
    ({"optimizer": {"lr": 1e308}}, "optimizer.lr", "<= 10, got 1e+308"),
    ({"optimizer": {"lr": float("nan")}}, "optimizer.lr", "got nan"),
    ({"optimizer": {"lr": "inf"}}, "optimizer.lr", "got inf"),
    ({"seed": 2**64}, "seed", f"<= {2**63 - 1}"),
    ({"epochs": 10**9}, "epochs", "<= 100000"),
])
def test_wrong_type_or_range_says_what_is_allowed(job, key, says):
    err = error_for(job)
    assert err.key == key and says in err.message
    assert str(err) == f"{key}: {err.message}"


def test_yaml_style_number_strings_are_numbers():
    assert validate_spec({"optimizer": {"lr": "1e-3"}})["optimizer"]["lr"] == 0.001


def test_combinations_checked_before_work_starts():
    assert error_for({"model": "alexnet", "repeat": {}}).key == "repeat.layer"
    assert "fc2" in error_for({"model": "resnet9", "repeat": {"layer": "fc2"}}).message
    assert error_for({"model": "tutorial_cnn", "repeat": {"min": 4, "max": 2}}).key == "repeat.max"
    assert error_for({"model": "alexnet", "stochastic_depth": {}}).key == "stochastic_depth"
    assert error_for({"optimizer": {"momentum": 0}}).key == "optimizer.nesterov"
    ok = validate_spec({"model": "ensemble", "members": ["tutorial_cnn", "resnet9"],
                        "repeat": {"layer": "members.0.fc2"}, "stochastic_depth": True})
    assert ok["stochastic_depth"] == {"p_L": 0.5}


def test_command_jobs_belong_to_the_launcher():
    assert error_for({"command": ["python", "train.py"]}).key == "command"


def test_schema_lines_cover_every_key():
    text = "\n".join(schema_lines())
    assert "optimizer.lr:" in text and "grad_noise.mode: one of annealed|relative" in text


def test_spec_module_never_imports_torch():
    code = "import sys, jobs.spec; sys.exit('torch' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
