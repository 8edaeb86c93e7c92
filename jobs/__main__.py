"""`python -m jobs SPEC.json --out DIR`: run one training job (exit codes: launcher/contract.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from jobs.spec import SpecError, schema_lines, validate_spec
from launcher.contract import (
    CHECKPOINT_FILE,
    ENV_DATA,
    ENV_NUM_WORKERS,
    ENV_THREADS,
    ENV_VISIBLE_DEVICES,
    EXIT_CRASH,
    EXIT_OK,
    EXIT_OOM,
    EXIT_REQUEUE,
    EXIT_USER,
    METRICS_FILE,
    RESULT_FILE,
)

DESCRIPTION = f"""\
Train one seeded model from a job spec (a JSON mapping; every key is optional)
and write {CHECKPOINT_FILE}, {METRICS_FILE} and {RESULT_FILE} into DIR, nowhere else.
Run it again on the same DIR and it resumes from DIR's checkpoint.

  echo '{{"model": "tutorial_cnn", "dataset": "synthetic", "epochs": 2}}' > demo.json
  python -m jobs demo.json --check          # print the spec with defaults filled in
  python -m jobs demo.json --out runs/demo  # train
"""

EPILOG = f"""\
exit codes: {EXIT_OK} finished; {EXIT_USER} bad spec, missing data or foreign checkpoint (one
line says which key and what is allowed); {EXIT_REQUEUE} stopped by SIGTERM/SIGUSR2 after
writing a checkpoint (requeue it: the next run resumes); {EXIT_OOM} CUDA out of memory after
writing a checkpoint of the last finished step (run it again where more memory is free);
{EXIT_CRASH} crash (traceback).

environment: {ENV_DATA} (data root when data_root is null), {ENV_NUM_WORKERS}
(DataLoader workers when num_workers is null), {ENV_THREADS[0]} (torch threads),
{ENV_VISIBLE_DEVICES}.

spec keys (dotted = nested mapping):
"""


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser; its --help lists every spec key from jobs.spec."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs", description=DESCRIPTION,
        epilog=EPILOG + "\n".join("  " + line for line in schema_lines()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="SPEC.json", help="the job spec (JSON mapping)")
    parser.add_argument("--out", metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--check", action="store_true",
                        help="validate, print the spec with defaults filled in, and exit")
    return parser


def _error(message: str) -> int:
    print(f"jobs: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USER


def _log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    # Catch SIGTERM/SIGUSR2 before the slow torch import: a signal during setup is kept and
    # honoured at the first safe point, instead of killing the job without a checkpoint.
    stop: dict = {}
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.update(
        signal=signal.Signals(signum).name)) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        return _main(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(args: argparse.Namespace, stop: dict) -> int:
    try:
        raw = json.loads(Path(args.spec).read_text())
        spec = validate_spec(raw)
    except OSError as exc:
        return _error(f"cannot read {args.spec}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        return _error(f"{args.spec}: not valid JSON ({exc})")
    except SpecError as exc:
        return _error(f"{args.spec}: {exc}")
    if args.check:
        print(json.dumps(spec, indent=2))
        return EXIT_OK
    if not args.out:
        return _error("--out DIR is required to run a job (or use --check)")
    _log(f"job: {args.spec} -> {args.out} (pid {os.getpid()}); importing torch")
    # torch is imported only now, so --help, --check and spec errors answer fast.
    from jobs.checkpoint import CheckpointError
    from jobs.data import DataError
    from jobs.train import OutOfMemory, Preempted, ResumeError, train

    try:
        train(spec, args.out, log=_log, stop=stop)
    except (SpecError, DataError, ResumeError, CheckpointError) as exc:
        return _error(str(exc))
    except Preempted as exc:
        _log(f"preempted: {exc}; exit {EXIT_REQUEUE} (requeue: the next run resumes)")
        return EXIT_REQUEUE
    except OutOfMemory as exc:
        _log(f"out of memory: {exc}; exit {EXIT_OOM} (run it again where it fits)")
        return EXIT_OOM
    return EXIT_OK


def run() -> int:
    """Runs main; a reader that stops early (`--check | head`) ends it quietly."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Nothing more can be written; point stdout at /dev/null so that the interpreter's
        # final flush does not print a second traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(run())
