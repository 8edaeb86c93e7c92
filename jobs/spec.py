"""The job spec: its schema, its defaults, and the one function that checks it.

Pure Python on purpose: the launcher imports this module to check sweep files
before anything runs, and the launcher must never import torch.

`SPEC_SCHEMA` maps every top-level key to a `Field`; a section's `Field` holds
its own keys in `.fields`.  `schema_lines()` renders the whole tree for help
text, so the list a user sees is always the list the validator enforces.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A bad job spec: `.key` is the dotted key path, `.message` says what is allowed."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


@dataclass(frozen=True)
class Field:
    """One spec key: its kind, default, allowed values or range, and help text.

    kind is one of: choice, choice_list, int, number, number_pair, bool, str, section.
    A section with `nullable=True` is an optional variant: null (or false) turns
    it off, a mapping (or true, meaning all defaults) turns it on.
    """

    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    nullable: bool = False
    fields: Mapping[str, Field] = field(default_factory=dict)

    def describe(self) -> str:
        """Returns what this key accepts, in words, e.g. "a number > 0 or null"."""
        if self.kind in ("choice", "choice_list"):
            text = "one of " + "|".join(self.choices)
            if self.kind == "choice_list":
                text = "a non-empty list, each " + text
        elif self.kind in ("int", "number"):
            text = ("an integer" if self.kind == "int" else "a number") + _range_text(self)
        elif self.kind == "number_pair":
            text = "a list of two numbers, each" + _range_text(self)
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = "a string"
        else:
            text = "a mapping with keys " + ", ".join(sorted(self.fields))
        if self.nullable:
            text += " or null"
        return text


def _number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_text(f: Field) -> str:
    parts = []
    if f.minimum is not None:
        parts.append(f"{'>' if f.min_exclusive else '>='} {_number_text(f.minimum)}")
    if f.maximum is not None:
        parts.append(f"{'<' if f.max_exclusive else '<='} {_number_text(f.maximum)}")
    return (" " + " and ".join(parts)) if parts else ""


SEED_MAX = 2**63 - 1  # torch.manual_seed takes at most 64 bits; NumPy's SeedSequence more
MODEL_NAMES = ("tutorial_cnn", "alexnet", "inception", "ensemble", "resnet9")
MEMBER_NAMES = ("tutorial_cnn", "alexnet", "inception", "resnet9")

# Layers that map a width to itself, so applying them k times is well-formed.
# alexnet has none: its fc2 is 384->192 (the group-GPU tutorial's network), so it cannot repeat.
REPEATABLE_LAYERS: dict[str, tuple[str, ...]] = {
    "tutorial_cnn": ("fc2",),
    "alexnet": (),
    "inception": ("inc2_1", "inc2_2", "inc2_3", "inc3_2"),
    "resnet9": ("res1", "res2"),
}

_OPTIMIZER = {
    "name": Field("choice", "sgd", "optimizer", choices=("sgd", "adam")),
    "lr": Field("number", 0.001, "learning rate (peak rate for onecycle)",
                minimum=0, min_exclusive=True, maximum=10),
    "momentum": Field("number", 0.9, "SGD momentum", minimum=0, maximum=1, max_exclusive=True),
    "nesterov": Field("bool", True, "SGD Nesterov momentum (needs momentum > 0)"),
    "weight_decay": Field("number", 0.001, "L2 weight decay", minimum=0, maximum=1),
    "betas": Field("number_pair", (0.9, 0.999), "Adam betas",
                   minimum=0, maximum=1, max_exclusive=True),
}

_LR_SCHEDULE = {
    "name": Field("choice", "none", "learning-rate schedule, stepped every batch",
                  choices=("none", "cosine", "step", "onecycle")),
    "min_lr": Field("number", 0.0, "cosine: final learning rate", minimum=0, maximum=10),
    "step_epochs": Field("int", 10, "step: multiply the rate by gamma every this many epochs",
                         minimum=1, maximum=100000),
    "gamma": Field("number", 0.1, "step: factor applied every step_epochs",
                   minimum=0, min_exclusive=True, maximum=10),
    "pct_start": Field("number", 0.25, "onecycle: fraction of steps spent warming up",
                       minimum=0, maximum=1, min_exclusive=True, max_exclusive=True),
}

_SYNTHETIC = {
    "train_size": Field("int", 5000, "synthetic training images (before the val split)",
                        minimum=1, maximum=2000000),
    "test_size": Field("int", 1000, "synthetic test images", minimum=1, maximum=2000000),
    "noise": Field("number", 1.0, "per-pixel noise std relative to the class pattern's",
                   minimum=0, maximum=1000),
    "mix": Field("number", 0.6, "each sample is blended with another class's pattern at a "
                 "weight uniform on [0, mix); past 0.5 that class dominates, so the best "
                 "accuracy is below 100%; 0: every sample is clear (the easy data set)",
                 minimum=0, maximum=1, max_exclusive=True),
    "shift": Field("int", 4, "largest shift of a pattern, in pixels each way", minimum=0,
                   maximum=16),
    "seed": Field("int", 0, "seed of the data set itself (fixed across job seeds, like CIFAR)",
                  minimum=0, maximum=SEED_MAX),
}

_REPEAT = {
    "layer": Field("str", "fc2", "layer applied k times per forward pass "
                   "(see REPEATABLE_LAYERS; ensemble: members.<i>.<layer>)"),
    "min": Field("int", 1, "smallest k", minimum=1, maximum=1000),
    "max": Field("int", 5, "largest k (k is uniform on [min, max], per training batch)",
                 minimum=1, maximum=1000),
    "eval": Field("choice", "expected", "k at evaluation: expected = floor((min+max+1)/2), "
                  "the mean of k rounded half up; max = max", choices=("expected", "max")),
}

_STOCHASTIC_DEPTH = {
    "p_L": Field("number", 0.5, "survival probability of the last residual block; "
                 "block l of L survives with 1 - l/L * (1 - p_L)",
                 minimum=0, maximum=1, min_exclusive=True),
}

_GRAD_NOISE = {
    "mode": Field("choice", "annealed", "annealed: N(0, eta/(1+t)^gamma) (variance); "
                  "relative: std alpha*||g||/sqrt(numel) per tensor",
                  choices=("annealed", "relative")),
    "eta": Field("number", 0.3, "annealed: noise variance at step 0", minimum=0, maximum=1000),
    "gamma": Field("number", 0.55, "annealed: decay exponent", minimum=0, maximum=100),
    "alpha": Field("number", 0.01, "relative: noise std as a fraction of the RMS gradient",
                   minimum=0, maximum=100),
}

SPEC_SCHEMA: dict[str, Field] = {
    "model": Field("choice", "resnet9", "network to train", choices=MODEL_NAMES),
    "members": Field("choice_list", ("alexnet", "inception"),
                     "ensemble members (logits summed)", choices=MEMBER_NAMES),
    "resnet9_widths": Field("choice", "standard", "standard = 64-128-256-256 (the PRNG lecture's); "
                            "myrtle = 64-128-256-512", choices=("standard", "myrtle")),
    "dataset": Field("choice", "cifar10", "data set", choices=("cifar10", "synthetic")),
    "data_root": Field("str", None, "CIFAR-10 root (holds cifar-10-batches-py); "
                       "null: $LAUNCH_DATA, else ~/.cache/launch/data", nullable=True),
    "download": Field("bool", True, "fetch CIFAR-10 through torchvision when it is missing "
                      "or corrupt (once, under a file lock)"),
    "synthetic": Field("section", None, "the synthetic data set", fields=_SYNTHETIC),
    "epochs": Field("int", 22, "passes over the training split", minimum=1, maximum=100000),
    "batch_size": Field("int", 500, "training batch size (last partial batch dropped)",
                        minimum=1, maximum=1000000),
    "seed": Field("int", 0, "the job seed; every random draw derives from it", minimum=0,
                  maximum=SEED_MAX),
    "val_size": Field("number", 0.1, "fraction of the training set held out (seeded "
                      "random_split); 0: no validation", minimum=0, maximum=1,
                      max_exclusive=True),
    "max_train_samples": Field("int", None, "cap on training images (null: all)",
                               minimum=1, nullable=True, maximum=1000000000),
    "max_val_samples": Field("int", None, "cap on validation images (null: all)",
                             minimum=1, nullable=True, maximum=1000000000),
    "max_test_samples": Field("int", None, "cap on test images (null: all)",
                              minimum=1, nullable=True, maximum=1000000000),
    "augment": Field("bool", False, "random crop (pad 4) and horizontal flip"),
    "loader": Field("choice", "workers", "workers: torch DataLoader; device: whole uint8 "
                    "data set on the device, batches made there", choices=("workers", "device")),
    "num_workers": Field("int", None, "DataLoader workers (under launch: within the job's CPUs, "
                         "$LAUNCH_NUM_WORKERS wins; null: 0)",
                         minimum=0, nullable=True, maximum=1024),
    "device": Field("choice", "auto", "auto: cuda if available", choices=("auto", "cpu", "cuda")),
    "reproducible": Field("bool", True, "deterministic cuDNN/cuBLAS and algorithms"),
    "optimizer": Field("section", None, "optimizer", fields=_OPTIMIZER),
    "lr_schedule": Field("section", None, "learning-rate schedule", fields=_LR_SCHEDULE),
    "repeat": Field("section", None, "random layer repetition (the group-GPU tutorial)",
                    nullable=True,
                    fields=_REPEAT),
    "stochastic_depth": Field("section", None, "ResNet9 stochastic depth (Huang et al. 2016)",
                              nullable=True, fields=_STOCHASTIC_DEPTH),
    "grad_noise": Field("section", None, "gradient noise", nullable=True, fields=_GRAD_NOISE),
    "progress_every_s": Field("number", 10.0, "seconds of training between progress lines "
                              "within an epoch (the job's log and its progress file); 0: none",
                              minimum=0, maximum=86400),
    "tensorboard": Field("bool", False, "also write TensorBoard scalar events into the job's "
                         "folder (needs the tensorboard package: the [tensorboard] extra)"),
    "bf16": Field("bool", False, "bf16 autocast (CUDA only; ignored with a log line on CPU)"),
    "channels_last": Field("bool", False, "channels_last memory format (CUDA only)"),
}


def validate_spec(job: Mapping) -> dict:
    """Returns the job spec with every default filled in; raises SpecError on the first problem."""
    if not isinstance(job, Mapping):
        raise SpecError("", f"a job spec must be a mapping, got {type(job).__name__}")
    if "command" in job:
        raise SpecError("command", "a job with 'command' is a command-template job: the "
                        "launcher runs it; python -m jobs only runs the built-in models")
    spec = _check_section(job, SPEC_SCHEMA, "")
    _check_combinations(spec)
    return spec


def _check_section(values: Mapping, fields: Mapping[str, Field], prefix: str) -> dict:
    for key in values:
        if key not in fields:
            raise SpecError(prefix + str(key), "unknown key; allowed keys: "
                            + ", ".join(sorted(fields)))
    return {name: _check_value(values.get(name, _MISSING), f, prefix + name)
            for name, f in fields.items()}


_MISSING = object()


def _check_value(value: Any, f: Field, key: str) -> Any:
    if f.kind == "section":
        return _check_subsection(value, f, key)
    if value is _MISSING:
        value = f.default
        return list(value) if isinstance(value, tuple) else value
    if value is None and f.nullable:
        return None
    if f.kind == "choice":
        if value not in f.choices:
            raise _bad(key, f, value)
        return value
    if f.kind == "choice_list":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise _bad(key, f, value)
        for i, item in enumerate(value):
            if item not in f.choices:
                raise _bad(f"{key}[{i}]", Field("choice", None, "", choices=f.choices), item)
        return list(value)
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise _bad(key, f, value)
        return value
    if f.kind == "str":
        if not isinstance(value, str) or not value:
            raise _bad(key, f, value)
        return value
    if f.kind == "number_pair":
        return _check_pair(value, f, key)
    return _check_number(value, f, key)


def _check_subsection(value: Any, f: Field, key: str) -> dict | None:
    if value is _MISSING:
        value = None if f.nullable else {}
    if f.nullable and (value is None or value is False):
        return None
    if f.nullable and value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise _bad(key, f, value)
    return _check_section(value, f.fields, key + ".")


def _check_number(value: Any, f: Field, key: str) -> int | float:
    if f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, f, value)
    else:
        # YAML 1.1 reads `1e-3` (no dot) as a string; accept any string float() accepts.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _bad(key, f, value) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(key, f, value)
        value = float(value)
        if not math.isfinite(value):
            raise _bad(key, f, value)
    too_low = f.minimum is not None and (
        value <= f.minimum if f.min_exclusive else value < f.minimum)
    too_high = f.maximum is not None and (
        value >= f.maximum if f.max_exclusive else value > f.maximum)
    if too_low or too_high:
        raise _bad(key, f, value)
    return value


def _check_pair(value: Any, f: Field, key: str) -> list[float]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(key, f, value)
    item = Field("number", None, "", minimum=f.minimum, maximum=f.maximum,
                 min_exclusive=f.min_exclusive, max_exclusive=f.max_exclusive)
    return [_check_number(v, item, f"{key}[{i}]") for i, v in enumerate(value)]


def _bad(key: str, f: Field, value: Any) -> SpecError:
    return SpecError(key, f"must be {f.describe()}, got {value!r}")


def _check_combinations(spec: dict) -> None:
    """Raises SpecError for keys that are valid alone but not together."""
    model = spec["model"]
    members = spec["members"] if model == "ensemble" else [model]
    opt = spec["optimizer"]
    if opt["name"] == "sgd" and opt["nesterov"] and opt["momentum"] == 0:
        raise SpecError("optimizer.nesterov", "Nesterov needs optimizer.momentum > 0; "
                        "set nesterov: false or a momentum in (0, 1)")
    repeat = spec["repeat"]
    if repeat is not None:
        allowed = repeatable_layers(model, members)
        if repeat["layer"] not in allowed:
            raise SpecError("repeat.layer", f"{model} has no repeatable layer "
                            f"{repeat['layer']!r}; allowed: "
                            + (", ".join(allowed) or "none (no layer maps a width to itself)"))
        if repeat["min"] > repeat["max"]:
            raise SpecError("repeat.max", f"must be >= repeat.min ({repeat['min']}), "
                            f"got {repeat['max']}")
    if spec["tensorboard"] and not tensorboard_installed():
        raise SpecError("tensorboard", "true needs the tensorboard package, which this Python "
                        f"({sys.executable}) cannot import: pip install 'launch[tensorboard]' "
                        "(or tensorboard), or set tensorboard: false")
    if spec["stochastic_depth"] is not None and "resnet9" not in members:
        raise SpecError("stochastic_depth", "needs residual blocks: model resnet9, or an "
                        f"ensemble with a resnet9 member; got model {model}")


@functools.lru_cache(maxsize=1)
def tensorboard_installed() -> bool:
    """Returns whether this Python can import tensorboard (looked up, not imported: cheap)."""
    import importlib.util

    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def repeatable_layers(model: str, members: list[str] | None = None) -> list[str]:
    """Returns the layer names `repeat.layer` accepts for this model (and ensemble members)."""
    if model != "ensemble":
        return list(REPEATABLE_LAYERS[model])
    return [f"members.{i}.{layer}" for i, member in enumerate(members or [])
            for layer in REPEATABLE_LAYERS[member]]


def schema_lines(fields: Mapping[str, Field] = SPEC_SCHEMA, prefix: str = "") -> list[str]:
    """Returns one help line per key, dotted paths for sections, e.g. for --help."""
    lines = []
    for name, f in fields.items():
        if f.kind == "section":
            state = "null (off) or a mapping" if f.nullable else "a mapping"
            lines.append(f"{prefix}{name}: {state}; {f.help}")
            lines.extend(schema_lines(f.fields, prefix + name + "."))
            continue
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        lines.append(f"{prefix}{name}: {f.describe()} (default {_json(default)}); {f.help}")
    return lines


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    return str(value)
