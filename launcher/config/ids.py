"""A job's id and a sweep's: `<swept values>-<hash8>` and `<name>-<YYYYmmdd-HHMMSS>`.

The hash is over the job's resolved spec (its canonical JSON), so an id never depends on a
job's position in the sweep; the readable part shows the swept values, whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime
from typing import Any

from launcher.rundir.layout import NAME_CHARS
from launcher.show.text import value_slug

SLUG_MAX = 48


def canonical_json(spec: dict) -> str:
    """Return the canonical JSON of a resolved job mapping: sorted keys, compact separators."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)


def slug(params: dict) -> str:
    """Return the readable part of a job id: swept values, only [A-Za-z0-9._=-], <= 48 chars."""
    return fit_slug({k: slug_piece(k, v) for k, v in params.items()})


def slug_piece(key: str, value: Any) -> tuple[str, str]:
    """Return (key, value) of a swept value as an id spells them: the key's last part."""
    return value_slug(key.rsplit(".", 1)[-1]), value_slug(value)


def _initials(key: str) -> str:
    words = [w for w in re.split(r"[_-]+", key) if w]
    return "".join(w[0] for w in words) if len(words) > 1 else key


def fit_slug(pieces: dict[str, tuple[str, str]]) -> str:
    """Return the swept values as `key=value_key=value` in at most SLUG_MAX characters.

    Values are never cut: a cut value names no job (`grad_noise=anneale`) and can make two
    jobs look alike. Keys are shortened instead (to their initials, then to one letter; the
    seed keeps its name), then whole pieces left out, longest first, down to "job": the
    hash that ends the id tells every job apart, and status shows the values beside it.
    """
    whole = {k: pieces[k] for k in sorted(pieces, key=lambda k: (k == "seed", k))}
    for short in (lambda name: name, _initials, lambda name: name[:1]):
        text = _join({k: (name if k == "seed" else short(name), value)
                      for k, (name, value) in whole.items()})
        if len(text) <= SLUG_MAX:
            return text or "job"
    kept = {k: (name if k == "seed" else name[:1], value) for k, (name, value) in whole.items()}
    while kept and len(_join(kept)) > SLUG_MAX:
        del kept[max(kept, key=lambda k: (len(kept[k][1]), k))]
    return _join(kept) or "job"


def _join(pieces: dict[str, tuple[str, str]]) -> str:
    return "_".join(f"{name}={value}" for name, value in pieces.values()).strip("._=-")


def job_id_for(spec: dict, params: dict) -> str:
    """Return the stable id `<slug>-<hash8>` of a job from its resolved spec and swept values."""
    return f"{slug(params)}-{hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:8]}"


def make_sweep_id(name: str, now: datetime | float | None = None) -> str:
    """Return the sweep id: the name made path-safe, "-", local time as YYYYmmdd-HHMMSS."""
    if not isinstance(now, datetime):
        now = datetime.fromtimestamp(time.time() if now is None else now)
    clean = re.sub(f"[^{NAME_CHARS}]+", "-", name)
    clean = re.sub(r"--+", "-", clean).strip("._-")[:40].rstrip("._-") or "sweep"
    return f"{clean}-{now:%Y%m%d-%H%M%S}"
