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
  launch ls                                      your sweeps, from any folder
  launch keys                                    every key of a sweep file, its default

SWEEP is a sweep id or its prefix (the newest match wins); left out, it is your newest
sweep. JOB is a job id, a part of it that only one job has, the id as `launch status`
shortens it (with ~), or the 8-hex hash that ends it. Runs live under $LAUNCH_RUNS_DIR
(default ./runs); each sweep is also recorded in your index ($XDG_STATE_HOME/launch,
default ~/.local/state/launch), so every command finds it from any folder. GPU leases and
the CPU budget are shared by every user of the machine through $LAUNCH_LOCK_DIR (default
/tmp/launch-leases).
"""

SWEEP_HELP = ("sweep id or its prefix, e.g. cifar (the newest match wins); default: your "
              "newest sweep")
TARGET_HELP = ("SWEEP, or SWEEP/JOB for one job: JOB is its id, a part only it has, "
               "or its 8-hex hash; default: your newest sweep")
KEY_VALUE_HELP = ("override a key with a dotted path; job.KEY=V sets KEY for every job, over "
                  "grid and points (job.epochs=1); a comma list sweeps it (grid.seed=0,1,2), "
                  "brackets make one list value (job.members=[alexnet,inception])")
YES_HELP = "do not ask, even at a terminal, when SWEEP was a prefix or left out"

EXAMPLES = {
    "sweep": """\
  launch sweep configs/demo.yaml                 run here, following progress (Ctrl-C stops
                                                 following, not the sweep)
  launch sweep configs/cifar.yaml --detach       start it and return
  launch sweep configs/cifar.yaml job.epochs=1 seeds=1 --dry-run   the plan, nothing runs
  launch sweep configs/cifar.yaml --executor slurm   one Slurm job array
  launch sweep --resume cifar                    rerun what failed, was cancelled or never ran
  launch sweep --resume cifar --restart 30c99f48 and begin that job again, from epoch 0
  launch sweep --resume cifar max_retries=2 timeout_min=240   resume with more room
  launch sweep --resume --dry-run                what a resume of your newest sweep would run
  launch sweep configs/cifar.yaml --notify 'mail -s "{message}" me@lab.org'   told when done

every key of a sweep file, with its default and what it allows: `launch keys`""",
    "status": """\
  launch status                                  GPUs, their users, your recent sweeps
  launch status cifar                            every job of the newest cifar sweep
  launch status --full                           nvidia-smi style GPU and process tables
  launch status --watch                          redraw every 2 s; Ctrl-C exits 0
  launch status --watch 5                        redraw every 5 s
  launch status --json > status.json             everything, machine-readable
  launch status --hosts athena,minerva           several machines over ssh, asked at once
  launch status --hosts all --free 2             the hosts of ~/.config/launch/config.yaml
                                                 with 2 free GPUs or more, best first
  ssh $(launch status --hosts all --pick 2)      log in where 2 GPUs are free""",
    "snapshot": """\
  launch snapshot > snap.json                    record this machine's GPUs
  launch snapshot --anonymize > snap.json        the same, safe to share
  LAUNCH_NVML_SNAPSHOT=snap.json launch status   read the GPUs from the file instead""",
    "logs": """\
  launch logs cifar -f                           follow the supervisor's log of a sweep
  launch logs cifar/model=resnet9_seed=0 -n 20   the last 20 lines of one job's output
  launch logs cifar/30c99f48 -f                  a job named by the hash ending its id
  launch logs -f                                 the supervisor's log of your newest sweep""",
    "results": """\
  launch results cifar                           per job, then mean +- std per configuration
  launch results cifar --csv > cifar.csv         one row per job, every field
  launch results cifar --json                    rows and summary, stable keys
  launch results cifar --plot curves.png         also draw the learning curves
  launch results                                 your newest sweep
  launch results cifar --metric val_accuracy --plot val.png   best first; its curves, +- std
  launch results mt --metric bleu                a number your own script reported""",
    "cancel": """\
  launch cancel cifar                            every job of the newest cifar sweep
  launch cancel cifar/model=resnet9_seed=0       one job; the others go on
  launch cancel cifar --grace 60                 a minute to write checkpoints before SIGKILL
  launch cancel cifar --yes                      no question, even at a terminal
  launch sweep --resume cifar                    afterwards: run the cancelled jobs again""",
    "ls": """\
  launch ls                                      your sweeps, newest first, from any folder
  launch status cifar                            then one of them in full""",
    "forget": """\
  launch forget cifar-20261122-193455            drop it from `launch ls`; its folder stays
  launch forget cifar --delete                   remove its folder too (asks at a terminal)""",
    "keys": """\
  launch keys                                    every key, its default, what it allows
  launch keys | grep resources.                  only the resources section""",
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

    if args.resume is not None:
        if args.notify:
            raise UserError("--notify goes with a sweep file; a resume keeps the sweep's own")
        target, overrides = args.resume, [*filter(None, [args.file]), *args.overrides]
        if "=" in target:  # `--resume max_retries=2`: sweep ids never hold "="
            target, overrides = "", [target, *overrides]
        not_overrides = [text for text in overrides if "=" not in text]
        if not_overrides:
            raise UserError(f"--resume SWEEP takes KEY=VALUE overrides, not {not_overrides[0]!r}"
                            " (the sweep's own file is what it resumes)")
        return sweep.resume_sweep(target or None, overrides, detach=args.detach,
                                  dry_run=args.dry_run, restart=args.restart)
    if args.restart:
        raise UserError("--restart JOB goes with --resume SWEEP")
    if not args.file:
        raise UserError("give a sweep file (launch sweep configs/demo.yaml) or --resume SWEEP")
    from launcher.config.overrides import notify_override

    return sweep.start_sweep(
        args.file,
        [*args.overrides, *([notify_override(args.notify)] if args.notify else [])],
        executor=args.executor,
        dry_run=args.dry_run,
        detach=args.detach,
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Show the GPUs, who uses them, and where the sweeps stand."""
    if args.hosts is not None or (args.free, args.pick, args.timeout) != (None, None, None):
        from launcher.commands import status_hosts

        if args.hosts is None:
            raise UserError("--free, --pick and --timeout go with --hosts NAMES")
        return status_hosts.run_hosts_status(
            args.hosts, timeout_s=args.timeout, as_json=args.json, full=args.full,
            watch_s=args.watch, free=args.free, pick=args.pick, sweep=args.sweep)
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


def cmd_ls(args: argparse.Namespace) -> int:
    """List your sweeps, newest first, wherever they were started: state, jobs, folder."""
    from launcher.commands import ls

    return ls.run_ls()


def cmd_forget(args: argparse.Namespace) -> int:
    """Drop a sweep from your index (`launch ls`); --delete also removes its folder."""
    from launcher.commands import ls

    return ls.run_forget(args.sweep, delete=args.delete, yes=args.yes)


def cmd_keys(args: argparse.Namespace) -> int:
    """List every key of a sweep file and of a job, with its default and what it allows."""
    from launcher.config import keys

    print("\n".join(keys.key_lines()))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """Print a sweep's results: one row per job, mean +- std over seeds per configuration."""
    from launcher.commands import results

    fmt = "csv" if args.csv else "json" if args.json else "table"
    return results.run_results(args.sweep, fmt=fmt, plot_path=args.plot, metric=args.metric,
                               order=args.order)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a sweep's jobs, or one job."""
    from launcher.commands import cancel

    return cancel.cancel(args.target, grace_s=args.grace, yes=args.yes)


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


class VersionAction(argparse.Action):
    """--version: looked up only when asked, so that other commands do not pay for it."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from importlib import metadata

        try:
            version = metadata.version("launch")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"launch {version}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="launch",
        description="Run seeded batch jobs on the free GPUs of a shared machine, or on Slurm.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = subparser(sub, "sweep", "run a sweep file here, or submit it to Slurm", cmd_sweep)
    p.add_argument("file", nargs="?", help="sweep file (YAML), e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=KEY_VALUE_HELP)
    p.add_argument("--executor", choices=("local", "slurm"),
                   help="where the jobs run (default: the file's `executor`, else local)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (with --resume: what it would rerun), start nothing")
    p.add_argument("--detach", action="store_true",
                   help="return at once, printing the sweep id, instead of following")
    p.add_argument("--resume", metavar="SWEEP", nargs="?", const="",
                   help="rerun what failed, was cancelled or never ran; finished jobs stay "
                        "(default: your newest sweep); KEY=VALUE may change max_retries, "
                        "timeout_min, resources.* and slurm.*, never what a job computes")
    p.add_argument("--restart", metavar="JOB", action="append", default=[],
                   help="with --resume: begin JOB again (its checkpoints and metrics go), "
                        "finished or not; repeatable")
    p.add_argument("--notify", metavar="CMD",
                   help="run CMD when the sweep ends (notify.command; split as a shell "
                        "would, run without one), e.g. --notify 'mail -s \"{message}\" me@lab.org'")

    p = subparser(sub, "status", "GPUs, who uses them, and your sweeps", cmd_status)
    p.add_argument("sweep", nargs="?", metavar="SWEEP",
                   help="show every job of this sweep (id or prefix)")
    p.add_argument("--full", action="store_true", help="nvidia-smi style GPU and process tables")
    p.add_argument("--json", action="store_true", help="everything as JSON with stable keys")
    p.add_argument("--watch", type=float, metavar="SECONDS", nargs="?", const=2.0,
                   help="redraw every SECONDS (default 2) until Ctrl-C (which exits 0)")
    hosts = p.add_argument_group(
        "several machines",
        "ask each host's `launch status --json` over ssh (BatchMode, your ssh config), all\n"
        "at once; a host without launch shows what nvidia-smi says")
    hosts.add_argument("--hosts", metavar="NAMES",
                       help="comma list of ssh hosts or aliases; `all`: the hosts of "
                            "~/.config/launch/config.yaml ($LAUNCH_CONFIG)")
    hosts.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="stop waiting for hosts after SECONDS (default 5)")
    hosts.add_argument("--free", type=int, metavar="N",
                       help="only hosts with at least N free GPUs, most free first")
    hosts.add_argument("--pick", type=int, metavar="N",
                       help="print only the name of the host with the most free GPUs among "
                            "those with at least N; exit 1 when none has N")

    p = subparser(sub, "snapshot", "record NVML's view as JSON (replay: LAUNCH_NVML_SNAPSHOT)",
                  cmd_snapshot)
    p.add_argument("--anonymize", action="store_true",
                   help="replace host, user names, UUIDs and command lines with stable fakes")

    p = subparser(sub, "logs", "a sweep's supervisor log, or one job's output", cmd_logs)
    p.add_argument("target", metavar="SWEEP[/JOB]", nargs="?", help=TARGET_HELP)
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing as it grows, until it ends (Ctrl-C exits 0)")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")

    p = subparser(sub, "results", "results table, mean +- std over seeds, plots", cmd_results)
    p.add_argument("sweep", metavar="SWEEP", nargs="?", help=SWEEP_HELP)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one CSV row per job")
    fmt.add_argument("--json", action="store_true", help="rows and summary as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the learning curves, mean +- std over seeds (matplotlib)")
    p.add_argument("--metric", metavar="KEY",
                   help="sort by this number of the jobs' results or metrics lines, best "
                        "first, and plot it (e.g. val_accuracy, or a script's own f1)")
    p.add_argument("--order", choices=("high", "low"),
                   help="which end of --metric comes first (default: low for a name with "
                        "loss or error in it, else high)")

    p = subparser(sub, "cancel", "cancel a sweep, or one job of it", cmd_cancel)
    p.add_argument("target", metavar="SWEEP[/JOB]", nargs="?", help=TARGET_HELP)
    p.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                   help="time between SIGTERM and SIGKILL (default 10)")
    p.add_argument("-y", "--yes", action="store_true", help=YES_HELP)

    subparser(sub, "ls", "your sweeps, newest first, from any folder", cmd_ls)

    p = subparser(sub, "forget", "drop a sweep from `launch ls` (--delete: its folder too)",
                  cmd_forget)
    p.add_argument("sweep", metavar="SWEEP", nargs="?", help=SWEEP_HELP)
    p.add_argument("--delete", action="store_true",
                   help="also remove the sweep's folder (asks first at a terminal)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask, even at a terminal")

    subparser(sub, "keys", "every sweep-file and job key, its default, what it allows",
              cmd_keys)

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
