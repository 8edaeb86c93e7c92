"""`launch results --plot`: the learning curves of a sweep, one colour per configuration."""

from __future__ import annotations

from pathlib import Path

from launcher.errors import UserError
from launcher.rundir.layout import SweepPaths
from launcher.rundir.store import read_jsonl
from launcher.show.results import collect_results
from launcher.show.text import fmt_value


def config_label(params: dict) -> str:
    """Return a short legend label for a configuration."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items()) or "all jobs"


def nan_if_none(value: float | None) -> float:
    """Return value, or NaN for a missing one (matplotlib leaves a gap there)."""
    return float("nan") if value is None else float(value)


def plot_learning_curves(paths: SweepPaths, path: str | Path) -> Path:
    """Return the path of a PNG (or other matplotlib format) of train loss and val accuracy.

    One line per job, one colour per configuration. matplotlib is an optional extra, so it is
    imported here and only here; the Figure API avoids pyplot's global backend state.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        # not `pip install 'launch[plot]'`: from a checkout that fetches an unrelated package
        raise UserError("matplotlib is not installed: pip install matplotlib "
                        "(in a checkout: pip install -e '.[plot]')") from None
    out = Path(path)
    if not out.parent.is_dir():
        raise UserError(f"cannot write plot {out}: folder {out.parent} does not exist")
    table = collect_results(paths)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    drawn, configs_drawn = 0, set()
    for colour, config in enumerate(table.configs):
        label: str | None = config_label(config.params)
        for job_id in config.job_ids:
            rows = read_jsonl(paths.job(job_id).metrics_jsonl)
            rows = [r for r in rows if isinstance(r.get("epoch"), int)]
            if not rows:
                continue
            epochs = [r["epoch"] for r in rows]
            loss = [nan_if_none(r.get("train_loss")) for r in rows]
            acc = [nan_if_none(r.get("val_accuracy")) for r in rows]
            style = {"color": f"C{colour % 10}", "marker": "o", "markersize": 3, "linewidth": 1.2}
            ax_loss.plot(epochs, loss, label=label, **style)
            ax_acc.plot(epochs, acc, **style)
            label = None  # one legend entry per configuration, not per seed
            drawn += 1
            configs_drawn.add(colour)
    if drawn == 0:
        raise UserError(f"no metrics yet in sweep {paths.sweep_id}: no job has finished an epoch")
    for ax, what in ((ax_loss, "train loss"), (ax_acc, "val accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.legend(fontsize="small")
    fig.suptitle(f"{table.sweep_id}: {drawn} jobs, {len(configs_drawn)} configurations")
    try:
        fig.savefig(out, dpi=110)
    except ValueError as e:
        # matplotlib names the formats it supports in this message
        raise UserError(f"cannot write plot {out}: {e}") from None
    return out
