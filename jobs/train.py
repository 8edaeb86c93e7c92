"""The training job, flat: train(spec, out_dir) -> result.

One pass reads top to bottom: seed, load data, build, resume if DIR holds a
checkpoint, train epoch by epoch (a progress line every progress_every_s within it; a
metrics line, log line and checkpoint after it), test, write the result.
SIGTERM/SIGUSR2 only set a flag; at the end of the current batch the job writes a
checkpoint of exactly that point and raises Preempted (EXIT_REQUEUE).  CUDA running out of
memory in a step writes a checkpoint of the last finished step and raises OutOfMemory
(EXIT_OOM).  Every random draw is keyed so that a resumed run, mid-epoch or not, ends with
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from jobs import checkpoint as ckpt
from jobs.board import open_board
from jobs.data import load_splits
from jobs.evaluate import evaluate
from jobs.loaders import Normalizer, augment_params, epoch_order, make_loader
from jobs.models import build_model, count_parameters
from jobs.optimizers import make_optimizer, make_scheduler
from jobs.progress import EpochProgress
from jobs.runinfo import (
    configure_threads,
    device_record,
    env_record,
    pick_device,
    resolve_num_workers,
)
from jobs.seeding import (
    STATEFUL,
    derived_seeds,
    global_rng_state,
    make_generator,
    seed_everything,
    set_global_rng_state,
)
from jobs.spec import SpecError, validate_spec
from jobs.variants import add_grad_noise, apply_repeat, apply_stochastic_depth
from launcher.contract import (
    METRICS_FILE,
    RESULT_FILE,
    RESULT_FINISHED,
    atomic_write,
    format_duration,
    remove_stray_temps,
)

# Keys that may differ between a checkpoint and the run resuming it: they do not change results.
RESUME_FREE_KEYS = ("num_workers", "data_root", "download", "progress_every_s", "tensorboard")
# For tests only, never set in a job's spec: a run that began before step N (optimizer steps
# so far) raises torch.OutOfMemoryError in step N's forward pass, as CUDA would on a full card.
TEST_OOM_ENV = "JOBS_TEST_OOM_AT_STEP"


class Preempted(Exception):
    """A signal asked the job to stop; the checkpoint is written. EXIT_REQUEUE: requeue it."""


class ResumeError(Exception):
    """DIR's checkpoint belongs to another spec."""


class OutOfMemory(Exception):
    """CUDA ran out of memory; the checkpoint is of the last finished step. EXIT_OOM."""


@dataclass
class Job:
    """What the loop works on: built once per process, then mutated by training."""

    spec: dict
    seeds: dict
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    generators: dict
    loaders: dict
    normalize: Normalizer
    autocast: object
    batches_per_epoch: int
    board: object = None  # jobs/board.py's Board when the spec asks for TensorBoard
    oom_at_step: int | None = None  # TEST_OOM_ENV
    stepping: bool = False  # in optimizer.step(): the weights may be half updated

    def may_run_out_of_memory(self) -> bool:
        """Return whether a step can raise torch.OutOfMemoryError: on CUDA (the CPU's
        allocator raises other errors), or when TEST_OOM_ENV asks for one."""
        return self.device.type == "cuda" or self.oom_at_step is not None


@dataclass
class Progress:
    """Where training stands; the part of a checkpoint that is not a state_dict."""

    epoch: int = 0        # epochs finished
    batch: int = 0        # batches finished in the current epoch
    step: int = 0         # optimizer steps so far
    loss_sum: float = 0.0  # current epoch's training loss, summed over samples
    correct: int = 0
    seen: int = 0
    elapsed_before_s: float = 0.0  # wall time of earlier attempts
    started: float = field(default_factory=time.perf_counter)

    def elapsed_s(self) -> float:
        return self.elapsed_before_s + time.perf_counter() - self.started


def train(spec: dict, out_dir: str | Path, log=print, stop: dict | None = None) -> dict:
    """Returns the result (RESULT_FILE's content) after training `spec` in `out_dir`, resuming.

    Raises SpecError/DataError/ResumeError for user errors, Preempted after a signal.
    `stop` lets a caller that caught a signal before calling us pass it on (see __main__).
    """
    spec = validate_spec(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = {} if stop is None else stop
    previous = catch_signals(stop, log)
    try:
        return _run(spec, out_dir, stop, log)
    except torch.OutOfMemoryError as exc:  # outside a training step: evaluation, setup
        raise OutOfMemory(f"{_first_line(exc)}; the last checkpoint stays") from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def catch_signals(stop: dict, log=print) -> dict:
    """Makes SIGTERM/SIGUSR2 set stop["signal"]; returns the previous handlers."""

    def handler(signum, frame):
        stop["signal"] = signal.Signals(signum).name

    try:
        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    except ValueError:  # not the main thread: whoever runs us owns the signals
        log("signals: not in the main thread, SIGTERM/SIGUSR2 will not checkpoint")
        return {}


def _run(spec: dict, out_dir: Path, stop: dict, log) -> dict:
    progress = Progress()  # its clock includes setup: wall_time_s is the job's, not the loop's
    num_threads = configure_threads()
    device = pick_device(spec["device"])
    num_workers = resolve_num_workers(spec)
    seeds = derived_seeds(spec["seed"])
    seed_everything(spec["seed"], spec["reproducible"])
    data = load_splits(spec, seeds["split"], log)
    job = _build(spec, seeds, device, data, num_workers, log)
    remove_stray_temps(out_dir, (ckpt.CHECKPOINT, ckpt.PREVIOUS, METRICS_FILE, RESULT_FILE))
    state = ckpt.load_checkpoint(out_dir, log)
    if state is not None:
        _restore(job, progress, state, out_dir)
    job.oom_at_step = _test_oom_step(progress.step)
    _truncate_metrics(out_dir / METRICS_FILE, progress.epoch)
    job.board = open_board(spec, out_dir, progress.step)
    log(f"start: {spec['model']} on {device_record(device)[0]}, {len(data['train'])} train / "
        f"{len(data['val'])} val / {len(data['test'])} test images, {spec['epochs']} epochs of "
        f"{job.batches_per_epoch} batches, seed {spec['seed']}, {num_threads} threads, "
        f"{num_workers} workers"
        + (_resume_note(progress, spec["epochs"]) if state else ""))
    try:
        while progress.epoch < spec["epochs"]:
            _train_epoch(job, progress, stop, out_dir, log)
        return _finish(job, progress, out_dir, env_record(num_threads, num_workers), log)
    finally:
        if job.board is not None:
            job.board.close()


def _resume_note(p: Progress, epochs: int) -> str:
    if p.epoch >= epochs:
        return "; training already done, evaluating the checkpoint"
    return f"; resuming at epoch {p.epoch + 1} batch {p.batch}"


def _build(spec, seeds, device, data, num_workers, log) -> Job:
    model = build_model(spec, make_generator(seeds["init"]))
    generators = {"repeat": make_generator(seeds["repeat"]),
                  "depth": make_generator(seeds["depth"]),
                  "noise": make_generator(seeds["noise"], device)}
    if spec["repeat"] is not None:
        apply_repeat(model, spec["repeat"], generators["repeat"])
    if spec["stochastic_depth"] is not None:
        apply_stochastic_depth(model, spec["stochastic_depth"]["p_L"], generators["depth"])
    cuda = device.type == "cuda"
    for key in ("bf16", "channels_last"):
        if spec[key] and not cuda:
            log(f"{key}: ignored on {device.type} (CUDA only)")
    channels_last = spec["channels_last"] and cuda
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    batches_per_epoch = len(data["train"]) // spec["batch_size"]
    if batches_per_epoch == 0:
        raise SpecError("batch_size", f"must be <= the {len(data['train'])} training images "
                        f"(the last partial batch is dropped), got {spec['batch_size']}")
    optimizer = make_optimizer(spec["optimizer"], model.parameters())
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (
        spec["bf16"] and cuda) else contextlib.nullcontext
    return Job(spec, seeds, device, model, optimizer,
               make_scheduler(spec["lr_schedule"], optimizer, spec["epochs"], batches_per_epoch),
               generators, {k: make_loader(spec["loader"], v, device, num_workers)
                            for k, v in data.items()},
               Normalizer(device, channels_last), autocast, batches_per_epoch)


def _train_epoch(job: Job, p: Progress, stop: dict, out_dir: Path, log) -> None:
    spec, epoch = job.spec, p.epoch
    loader = job.loaders["train"]
    order, gen = epoch_order(len(loader), job.seeds["data_order"], epoch)
    params = augment_params(len(loader), job.seeds["augment"], epoch) if spec["augment"] else None
    job.model.train()
    loss_sum = torch.tensor(p.loss_sum, dtype=torch.float64, device=job.device)
    correct = torch.tensor(p.correct, dtype=torch.int64, device=job.device)
    start_seen, start_s = p.seen, time.perf_counter()
    reporter = EpochProgress(spec["progress_every_s"], out_dir, epoch=epoch + 1,
                             epochs=spec["epochs"], batches=job.batches_per_epoch, batch=p.batch,
                             seen=p.seen, log=log, elapsed_s=p.elapsed_s,
                             scalars=job.board.add if job.board else None)
    # What a checkpoint of the last finished step holds, taken before each step where a step
    # can run out of memory: 65 us a batch on the CPU, where none can (bench/train_overhead.py).
    oom = job.may_run_out_of_memory()
    for x, y in loader.batches(order, params, spec["batch_size"], p.batch, generator=gen):
        before = _random_state(job) if oom else None
        failed = None
        try:
            loss, out = _step(job, x, y, p.step)
        except torch.OutOfMemoryError as exc:  # handled below, once its frames are freed
            failed = _first_line(exc)
        if failed is not None:
            p.loss_sum, p.correct = loss_sum.item(), int(correct.item())
            _out_of_memory(job, p, out_dir, before, failed)
        # Kept on the device: an .item() per batch would stall the GPU pipeline.
        loss_sum += loss.detach().double() * len(y)
        correct += (out.argmax(1) == y).sum()
        p.batch, p.step, p.seen = p.batch + 1, p.step + 1, p.seen + len(y)
        if reporter.due() and p.batch < job.batches_per_epoch:  # read loss_sum only now
            reporter.report(p.batch, p.seen, loss_sum, p.step)
        if stop and p.batch < job.batches_per_epoch:
            p.loss_sum, p.correct = loss_sum.item(), int(correct.item())
            _save(job, p, out_dir)
            raise Preempted(f"{stop['signal']}: checkpoint at epoch {epoch + 1} "
                            f"batch {p.batch} written")
    train_s = time.perf_counter() - start_s
    val = evaluate(job, job.loaders["val"])
    line = {"epoch": epoch + 1, "epochs": spec["epochs"],
            "train_loss": loss_sum.item() / p.seen, "train_accuracy": correct.item() / p.seen,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "lr": job.optimizer.param_groups[0]["lr"],
            "images_per_s": (p.seen - start_seen) / max(train_s, 1e-9),
            "elapsed_s": p.elapsed_s(), "time": time.time()}
    with open(out_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")
    if job.board is not None:
        job.board.add_epoch(line, p.step)
    p.epoch, p.batch, p.loss_sum, p.correct, p.seen = epoch + 1, 0, 0.0, 0, 0
    _save(job, p, out_dir)
    log(_epoch_line(line, p))
    if stop:  # arrived during validation: this epoch's checkpoint is the place to stop
        raise Preempted(f"{stop['signal']}: checkpoint at epoch {p.epoch} written")


def _step(job: Job, x: torch.Tensor, y: torch.Tensor, step: int):
    x = job.normalize(x)
    with job.autocast():
        out = job.model(x)
        if step == job.oom_at_step:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB "
                                         f"(raised by {TEST_OOM_ENV} at step {step})")
        loss = F.cross_entropy(out, y)
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if job.spec["grad_noise"] is not None:
        add_grad_noise([q for g in job.optimizer.param_groups for q in g["params"]], step,
                       job.spec["grad_noise"], job.generators["noise"])
    job.stepping = True
    job.optimizer.step()
    job.stepping = False
    if job.scheduler is not None:
        job.scheduler.step()
    return loss, out


def _test_oom_step(first_step: int) -> int | None:
    """Return the step at which this run is to run out of memory (TEST_OOM_ENV), if any."""
    try:
        step = int(os.environ.get(TEST_OOM_ENV, ""))
    except ValueError:
        return None
    return step if step > first_step else None


def _random_state(job: Job) -> dict:
    """Return the generators' states now: a step that fails consumed draws of its own."""
    return {"generators": {name: job.generators[name].get_state() for name in STATEFUL},
            "rng": global_rng_state()}


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _out_of_memory(job: Job, p: Progress, out_dir: Path, before: dict | None,
                   what: str) -> None:
    """Write the checkpoint of the last finished step and raise OutOfMemory.

    A step that failed before the optimizer touched the weights left them as the last step
    did, and `before` holds the random state from then: the checkpoint resumes exactly. One
    that failed inside optimizer.step() may have updated some weights: the checkpoint on
    disk (the last epoch's, or one a signal asked for) stays.
    """
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # what the failed step held, for the checkpoint's copies
    if job.stepping:
        raise OutOfMemory(f"{what}; in the optimizer's step, so the last checkpoint stays")
    if before is None:  # not foreseen (Job.may_run_out_of_memory): no state to resume from
        raise OutOfMemory(f"{what}; the last checkpoint stays")
    _save(job, p, out_dir, before)
    raise OutOfMemory(f"{what}; checkpoint at epoch {p.epoch + 1} batch {p.batch} "
                      f"(step {p.step}) written")


def _epoch_line(line: dict, p: Progress) -> str:
    done, total = line["epoch"], line["epochs"]
    eta_s = line["elapsed_s"] / done * (total - done)
    val = "" if line["val_loss"] is None else (
        f" val_loss {line['val_loss']:.4f} val_acc {line['val_accuracy']:.3f}")
    return (f"epoch {done}/{total} train_loss {line['train_loss']:.4f} "
            f"train_acc {line['train_accuracy']:.3f}{val} lr {line['lr']:.3g} "
            f"{line['images_per_s']:.0f} img/s elapsed {format_duration(line['elapsed_s'])} "
            f"eta {format_duration(eta_s)}")


def _comparable(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in RESUME_FREE_KEYS}


def _save(job: Job, p: Progress, out_dir: Path, random_state: dict | None = None) -> None:
    random_state = random_state or _random_state(job)
    ckpt.save_checkpoint(out_dir, {
        "format": "launch-checkpoint/1", "spec": _comparable(job.spec),
        "epoch": p.epoch, "batch": p.batch, "step": p.step,
        "loss_sum": p.loss_sum, "correct": p.correct, "seen": p.seen,
        "elapsed_s": p.elapsed_s(),
        "model": job.model.state_dict(), "optimizer": job.optimizer.state_dict(),
        "scheduler": None if job.scheduler is None else job.scheduler.state_dict(),
        "generators": random_state["generators"], "rng": random_state["rng"],
    })


def _restore(job: Job, p: Progress, state: dict, out_dir: Path) -> None:
    if state.get("spec") != _comparable(job.spec):
        old = state.get("spec") or {}
        keys = sorted(k for k in set(old) | set(_comparable(job.spec))
                      if old.get(k) != job.spec.get(k))
        raise ResumeError(f"{out_dir / ckpt.CHECKPOINT} was written by a different spec "
                          f"(differs in: {', '.join(keys) or 'format'}); use a fresh --out DIR, "
                          "or delete the checkpoint to start over")
    job.model.load_state_dict(state["model"])
    job.optimizer.load_state_dict(state["optimizer"])
    if job.scheduler is not None:
        job.scheduler.load_state_dict(state["scheduler"])
    for name in STATEFUL:
        job.generators[name].set_state(state["generators"][name])
    set_global_rng_state(state["rng"])
    p.epoch, p.batch, p.step = state["epoch"], state["batch"], state["step"]
    p.loss_sum, p.correct, p.seen = state["loss_sum"], state["correct"], state["seen"]
    p.elapsed_before_s = state["elapsed_s"]


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drops metric lines past the checkpoint: a killed run may have logged an epoch it redoes."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if _epoch_of(ln) <= epochs_done]
    atomic_write(path, "".join(ln + "\n" for ln in lines).encode(), durable=True)


def _epoch_of(line: str) -> float:
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):  # a line cut short by a kill
        return float("inf")


def _finish(job: Job, p: Progress, out_dir: Path, env: dict, log) -> dict:
    test = evaluate(job, job.loaders["test"])
    device, gpu_uuid = device_record(job.device)
    result = {
        "status": RESULT_FINISHED, "seed": job.spec["seed"], "derived_seeds": job.seeds,
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "per_class_accuracy": test["per_class_accuracy"],
        "epochs_done": p.epoch, "wall_time_s": p.elapsed_s(),
        "device": device, "gpu_uuid": gpu_uuid,
        "num_parameters": count_parameters(job.model),
        "weights_sha256": ckpt.weights_sha256(job.model.state_dict()),
        "env": env, "spec": job.spec,
    }
    if job.board is not None:
        job.board.add("test/accuracy", test["accuracy"], p.step)
        job.board.add("test/loss", test["loss"], p.step)
    ckpt.atomic_write_json(out_dir / RESULT_FILE, result)
    log_acc = "n/a" if test["accuracy"] is None else f"{test['accuracy']:.4f}"
    log(f"done: test_accuracy {log_acc} test_loss {test['loss']:.4f} "
        f"weights_sha256 {result['weights_sha256']}")
    return result
