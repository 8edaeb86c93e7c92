"""`launch`: run seeded batch jobs on the free GPUs of a shared machine, or on Slurm.

Every command is a function taking the parsed arguments and returning an exit code. Modules
are imported inside the command that needs them so that `launch status` starts in a blink.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from launcher.errors import UserError

EPILOG = """\
examples:
  launch sweep configs/demo.yaml                 run a sweep here, follow it in the terminal
  launch sweep configs/cifar.yaml --detach       start it and return (survives logging out)
  launch sweep configs/cifar.yaml job.epochs=1 grid.seed=0,1 --dry-run
  launch sweep configs/cifar.yaml --executor slurm   submit one Slurm job array
  launch sweep --resume cifar                    rerun what failed, was cancelled or never ran
  launch status                                  GPUs, who uses them, and your sweeps
  launch logs cifar/resnet9 -f                   follow one job's output
  launch results cifar --plot curves.png         mean +- std over seeds, learning curves
  launch cancel cifar                            stop a sweep (or SWEEP/JOB for one job)

A SWEEP argument is a sweep id or its prefix (the newest match wins); JOB likewise.
Runs live under $LAUNCH_RUNS_DIR (default ./runs). GPU leases and the CPU budget are
shared by every user of the machine through $LAUNCH_LOCK_DIR (default /tmp/launch-leases).
"""


def cmd_sweep(args: argparse.Namespace) -> int:
    """Plan a sweep, then run it here or submit it to Slurm."""
    from launcher import sweeping

    if args.resume:
        if args.file or args.overrides:
            raise UserError("--resume SWEEP takes no sweep file or overrides")
        return sweeping.resume_sweep(args.resume, detach=args.detach)
    if not args.file:
        raise UserError("give a sweep file (launch sweep configs/demo.yaml) or --resume SWEEP")
    return sweeping.start_sweep(
        args.file,
        args.overrides,
        executor=args.executor,
        dry_run=args.dry_run,
        detach=args.detach,
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Show the GPUs, who uses them, and where the sweeps stand."""
    from launcher import status

    return status.run_status(
        full=args.full, as_json=args.json, watch_s=args.watch, sweep=args.sweep
    )


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Print what NVML and psutil say now, as a replayable JSON snapshot."""
    from launcher import snapshot

    return snapshot.run_snapshot(anonymize=args.anonymize)


def cmd_logs(args: argparse.Namespace) -> int:
    """Print (or follow) a sweep's supervisor log or one job's output."""
    from launcher import logs

    return logs.run_logs(args.target, follow=args.follow, lines=args.lines)


def cmd_results(args: argparse.Namespace) -> int:
    """Print a sweep's results: one row per job, mean +- std over seeds per configuration."""
    from launcher import results

    fmt = "csv" if args.csv else "json" if args.json else "table"
    return results.run_results(args.sweep, fmt=fmt, plot_path=args.plot)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a sweep's jobs, or one job."""
    from launcher import sweeping

    return sweeping.cancel(args.target, grace_s=args.grace)


def cmd_sbatch(args: argparse.Namespace) -> int:
    """Write a standalone Slurm array script for a sweep file."""
    from launcher import sweeping

    return sweeping.write_sbatch_script(args.file, args.overrides, args.output)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="launch",
        description="Run seeded batch jobs on the free GPUs of a shared machine, or on Slurm.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sweep", help="run a sweep file here, or submit it to Slurm",
                       description=cmd_sweep.__doc__)
    p.add_argument("file", nargs="?", help="sweep file (YAML), e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override a key with a dotted path (job.epochs=1); "
                        "a comma list sweeps it (grid.seed=0,1,2)")
    p.add_argument("--executor", choices=("local", "slurm"),
                   help="where the jobs run (default: the file's `executor`, else local)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, start nothing")
    p.add_argument("--detach", action="store_true",
                   help="return at once, printing the sweep id, instead of following")
    p.add_argument("--resume", metavar="SWEEP",
                   help="rerun what failed, was cancelled or never ran; finished jobs stay")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("status", help="GPUs, who uses them, and your sweeps",
                       description=cmd_status.__doc__)
    p.add_argument("sweep", nargs="?", help="show only this sweep (id or prefix)")
    p.add_argument("--full", action="store_true", help="nvidia-smi style GPU and process tables")
    p.add_argument("--json", action="store_true", help="everything as JSON with stable keys")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="redraw every SECONDS until Ctrl-C")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("snapshot", help="record NVML's view as JSON (replay: LAUNCH_NVML_SNAPSHOT)",
                       description=cmd_snapshot.__doc__)
    p.add_argument("--anonymize", action="store_true",
                   help="replace host, user names, UUIDs and command lines with stable fakes")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("logs", help="a sweep's supervisor log, or one job's output",
                       description=cmd_logs.__doc__)
    p.add_argument("target", metavar="SWEEP[/JOB]")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing as it grows")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("results", help="results table, mean +- std over seeds, plots",
                       description=cmd_results.__doc__)
    p.add_argument("sweep", metavar="SWEEP")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one CSV row per job")
    fmt.add_argument("--json", action="store_true", help="rows and summary as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the learning curves (matplotlib)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("cancel", help="cancel a sweep, or one job of it",
                       description=cmd_cancel.__doc__)
    p.add_argument("target", metavar="SWEEP[/JOB]")
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="time between SIGTERM and SIGKILL (default 10)")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("sbatch", help="write a standalone Slurm array script for a sweep file",
                       description=cmd_sbatch.__doc__)
    p.add_argument("file", help="sweep file (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("-o", "--output", required=True, metavar="FILE.sbatch")
    p.set_defaults(func=cmd_sbatch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launch command line; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as err:
        print(f"launch: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
