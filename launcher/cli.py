"""`launch`: run seeded batch jobs on the free GPUs of a shared machine, or on Slurm.

Every command is a function taking the parsed arguments and returning an exit code. Modules
are imported inside the command that needs them so that `launch status` starts in a blink.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from launcher.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError

EPILOG = """\
examples:
  launch sweep configs/demo.yaml                 run a sweep here, follow it in the terminal
  launch sweep configs/cifar.yaml --detach       start it and return (survives logging out)
  launch sweep configs/cifar.yaml job.epochs=1 grid.seed=0,1 --dry-run
  launch sweep configs/cifar.yaml --executor slurm   submit one Slurm job array
  launch sweep --resume cifar                    rerun what failed, was cancelled or never ran
  launch status                                  GPUs, who uses them, and your sweeps
  launch logs cifar/model=resnet9_seed=0 -f      follow one job's output
  launch results cifar --plot curves.png         mean +- std over seeds, learning curves
  launch cancel cifar                            stop a sweep (or SWEEP/JOB for one job)

SWEEP is a sweep id or its prefix (the newest match wins). JOB is a job id, a part of it
that only one job has, the id as `launch status` shortens it (with ~), or the 8-hex hash
that ends it. Runs live under $LAUNCH_RUNS_DIR (default ./runs). GPU leases and the CPU
budget are shared by every user of the machine through $LAUNCH_LOCK_DIR (default
/tmp/launch-leases).
"""

SWEEP_HELP = "sweep id or its prefix, e.g. cifar (the newest match wins)"
TARGET_HELP = ("SWEEP, or SWEEP/JOB for one job: JOB is its id, a part only it has, "
               "or its 8-hex hash")
KEY_VALUE_HELP = ("override a key with a dotted path; job.KEY=V sets KEY for every job, over "
                  "grid and points (job.epochs=1); a comma list sweeps it (grid.seed=0,1,2)")

EXAMPLES = {
    "sweep": """\
  launch sweep configs/demo.yaml                 run here, following progress (Ctrl-C stops
                                                 following, not the sweep)
  launch sweep configs/cifar.yaml --detach       start it and return
  launch sweep configs/cifar.yaml job.epochs=1 seeds=1 --dry-run   the plan, nothing runs
  launch sweep configs/cifar.yaml --executor slurm   one Slurm job array
  launch sweep --resume cifar                    rerun what failed, was cancelled or never ran
  launch sweep --resume cifar --restart 19478088 and begin that job again, from epoch 0""",
    "status": """\
  launch status                                  GPUs, their users, your recent sweeps
  launch status cifar                            every job of the newest cifar sweep
  launch status --full                           nvidia-smi style GPU and process tables
  launch status --watch 5                        redraw every 5 s; Ctrl-C exits 0
  launch status --json > status.json             everything, machine-readable""",
    "snapshot": """\
  launch snapshot > snap.json                    record this machine's GPUs
  launch snapshot --anonymize > snap.json        the same, safe to share
  LAUNCH_NVML_SNAPSHOT=snap.json launch status   read the GPUs from the file instead""",
    "logs": """\
  launch logs cifar -f                           follow the supervisor's log of a sweep
  launch logs cifar/model=resnet9_seed=0 -n 20   the last 20 lines of one job's output
  launch logs cifar/19478088 -f                  a job named by the hash ending its id""",
    "results": """\
  launch results cifar                           per job, then mean +- std per configuration
  launch results cifar --csv > cifar.csv         one row per job, every field
  launch results cifar --json                    rows and summary, stable keys
  launch results cifar --plot curves.png         also draw the learning curves""",
    "cancel": """\
  launch cancel cifar                            every job of the newest cifar sweep
  launch cancel cifar/model=resnet9_seed=0       one job; the others go on
  launch cancel cifar --grace 60                 a minute to write checkpoints before SIGKILL
  launch sweep --resume cifar                    afterwards: run the cancelled jobs again""",
    "rules": """\
  launch rules                                   the house rules in force for you now
  launch rules --check draft.yaml                validate a draft before installing it
  sudo install -m 644 draft.yaml /etc/launch/rules.yaml   install it for every user""",
    "setup": """\
  sudo launch setup                              protect /tmp/launch-leases for every user
  sudo LAUNCH_LOCK_DIR=/var/lib/launch launch setup   another lease directory
  sudo launch setup --slots-per-gpu 4            users may pack at most 4 jobs on a GPU""",
    "sbatch": """\
  launch sbatch configs/cifar.yaml -o cifar.sbatch   write the script and its run directory
  sbatch cifar.sbatch                                submit it; launch status cifar follows it
  launch sbatch configs/cifar.yaml job.epochs=1 -o short.sbatch""",
}


def subparser(sub, name: str, help_text: str, func) -> argparse.ArgumentParser:
    """Return a new subcommand parser whose --help ends with its examples."""
    p = sub.add_parser(name, help=help_text, description=func.__doc__,
                       epilog=f"examples:\n{EXAMPLES[name]}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def cmd_sweep(args: argparse.Namespace) -> int:
    """Plan a sweep, then run it here or submit it to Slurm."""
    from launcher.commands import sweep

    if args.resume:
        if args.file or args.overrides:
            raise UserError("--resume SWEEP takes no sweep file or overrides")
        return sweep.resume_sweep(args.resume, detach=args.detach, restart=args.restart)
    if args.restart:
        raise UserError("--restart JOB goes with --resume SWEEP")
    if not args.file:
        raise UserError("give a sweep file (launch sweep configs/demo.yaml) or --resume SWEEP")
    return sweep.start_sweep(
        args.file,
        args.overrides,
        executor=args.executor,
        dry_run=args.dry_run,
        detach=args.detach,
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Show the GPUs, who uses them, and where the sweeps stand."""
    from launcher.commands import status

    return status.run_status(
        full=args.full, as_json=args.json, watch_s=args.watch, sweep=args.sweep
    )


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Print what NVML and psutil say now, as a replayable JSON snapshot."""
    from launcher.commands import snapshot

    return snapshot.run_snapshot(anonymize=args.anonymize)


def cmd_logs(args: argparse.Namespace) -> int:
    """Print (or follow) a sweep's supervisor log or one job's output."""
    from launcher.commands import logs

    return logs.run_logs(args.target, follow=args.follow, lines=args.lines)


def cmd_results(args: argparse.Namespace) -> int:
    """Print a sweep's results: one row per job, mean +- std over seeds per configuration."""
    from launcher.commands import results

    fmt = "csv" if args.csv else "json" if args.json else "table"
    return results.run_results(args.sweep, fmt=fmt, plot_path=args.plot)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a sweep's jobs, or one job."""
    from launcher.commands import cancel

    return cancel.cancel(args.target, grace_s=args.grace)


def cmd_sbatch(args: argparse.Namespace) -> int:
    """Write a standalone Slurm array script for a sweep file."""
    from launcher.commands import sbatch

    return sbatch.write_sbatch_script(args.file, args.overrides, args.output)


def cmd_rules(args: argparse.Namespace) -> int:
    """Show the house rules of this box, or check a draft of them."""
    from launcher.commands import rules

    return rules.run_rules(args.check)


def cmd_setup(args: argparse.Namespace) -> int:
    """Make the lease directory root's so that no user can delete or plant a lease (as root)."""
    from launcher.commands import setup

    return setup.run_setup(args.dir, args.slots_per_gpu, args.tmpfiles)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="launch",
        description="Run seeded batch jobs on the free GPUs of a shared machine, or on Slurm.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = subparser(sub, "sweep", "run a sweep file here, or submit it to Slurm", cmd_sweep)
    p.add_argument("file", nargs="?", help="sweep file (YAML), e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=KEY_VALUE_HELP)
    p.add_argument("--executor", choices=("local", "slurm"),
                   help="where the jobs run (default: the file's `executor`, else local)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, start nothing")
    p.add_argument("--detach", action="store_true",
                   help="return at once, printing the sweep id, instead of following")
    p.add_argument("--resume", metavar="SWEEP",
                   help="rerun what failed, was cancelled or never ran; finished jobs stay")
    p.add_argument("--restart", metavar="JOB", action="append", default=[],
                   help="with --resume: begin JOB again (its checkpoints and metrics go), "
                        "finished or not; repeatable")

    p = subparser(sub, "status", "GPUs, who uses them, and your sweeps", cmd_status)
    p.add_argument("sweep", nargs="?", metavar="SWEEP",
                   help="show every job of this sweep (id or prefix)")
    p.add_argument("--full", action="store_true", help="nvidia-smi style GPU and process tables")
    p.add_argument("--json", action="store_true", help="everything as JSON with stable keys")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="redraw every SECONDS until Ctrl-C (which exits 0)")

    p = subparser(sub, "snapshot", "record NVML's view as JSON (replay: LAUNCH_NVML_SNAPSHOT)",
                  cmd_snapshot)
    p.add_argument("--anonymize", action="store_true",
                   help="replace host, user names, UUIDs and command lines with stable fakes")

    p = subparser(sub, "logs", "a sweep's supervisor log, or one job's output", cmd_logs)
    p.add_argument("target", metavar="SWEEP[/JOB]", help=TARGET_HELP)
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing as it grows, until it ends (Ctrl-C exits 0)")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")

    p = subparser(sub, "results", "results table, mean +- std over seeds, plots", cmd_results)
    p.add_argument("sweep", metavar="SWEEP", help=SWEEP_HELP)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one CSV row per job")
    fmt.add_argument("--json", action="store_true", help="rows and summary as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the learning curves (matplotlib)")

    p = subparser(sub, "cancel", "cancel a sweep, or one job of it", cmd_cancel)
    p.add_argument("target", metavar="SWEEP[/JOB]", help=TARGET_HELP)
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="time between SIGTERM and SIGKILL (default 10)")

    p = subparser(sub, "sbatch", "write a standalone Slurm array script for a sweep file",
                  cmd_sbatch)
    p.add_argument("file", help="sweep file (YAML), e.g. configs/cifar.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=KEY_VALUE_HELP)
    p.add_argument("-o", "--output", required=True, metavar="FILE.sbatch",
                   help="where to write the script; its run directory is made at once")

    p = subparser(sub, "rules", "the house rules every user's sweeps keep on this box "
                  "(/etc/launch/rules.yaml, or $LAUNCH_RULES)", cmd_rules)
    p.add_argument("--check", metavar="FILE", help="validate FILE as house rules: the error "
                   "names the line and the key, as it would for everyone once installed")
    p = subparser(sub, "setup", "(admin) protect the lease directory from every user but root",
                  cmd_setup)
    p.add_argument("--dir", metavar="DIR",
                   help="the lease directory (default: $LAUNCH_LOCK_DIR, else /tmp/launch-leases)")
    p.add_argument("--slots-per-gpu", type=int, metavar="N",
                   help="slot files per GPU: the largest jobs_per_gpu users can ask (default 16)")
    p.add_argument("--tmpfiles", metavar="FILE",
                   help="where to write the systemd-tmpfiles lines that remake it at boot "
                        "(default /etc/tmpfiles.d/launch-leases.conf where that folder exists)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launch command line; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.func(args)
    except UserError as err:
        print(f"launch: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
