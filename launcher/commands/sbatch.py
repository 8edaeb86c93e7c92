"""`launch sbatch`: a standalone Slurm array script for a sweep file, and its run directory."""

from __future__ import annotations

from pathlib import Path

from launcher.commands.sweep import create_run_dir, load_plan
from launcher.errors import UserError
from launcher.rundir import index


def write_sbatch_script(file: str, overrides: list[str], output: str) -> int:
    """Write a standalone Slurm array script and the run directory it fills."""
    from launcher.slurm import sbatch

    out = Path(output).absolute()
    if not out.parent.is_dir():
        raise UserError(f"cannot write {output}: folder {out.parent} does not exist")
    sweep, plans = load_plan(file, overrides)
    paths = create_run_dir(sweep, plans, "slurm")
    try:
        # the Slurm record names the script, so that status can say it waits for `sbatch`
        text = sbatch.write_sbatch(sweep, plans, paths.root, script=out)
        out.write_text(text)
    except BaseException:
        import shutil  # a run dir without its script would show pending forever

        shutil.rmtree(paths.root, ignore_errors=True)
        index.forget({str(paths.root)})
        raise
    print(f"wrote {output} for sweep {paths.sweep_id} ({len(plans)} jobs); "
          f"submit: sbatch {output}")
    return 0
