"""The training loop: one function, readable in one sitting.

prepare data -> design the model -> train, validating as it goes -> keep the
best and last checkpoints. Testing is a separate step (``neuralab.train.evaluate``)
so that the test split is touched once, by the best checkpoint only.

Exact resume: the data order of epoch e is a permutation drawn from
(seed, e), the augmentation of step s from (seed, s), the learning rate is a
function of the step, and the checkpoint holds the weights, the optimizer, every
RNG state and the step. So N steps straight and N/2 + resume + N/2 give
bit-identical parameters on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from neuralab import config as config_lib
from neuralab import data
from neuralab.config import RunConfig
from neuralab.data.text import is_text
from neuralab.errors import UserError
from neuralab.models import LanguageModel, create_model, list_models, model_kind
from neuralab.runs import Progress, make_run_dir, set_threads
from neuralab.seed import rng_state, seed_everything, set_rng_state
from neuralab.tasks import build_task
from neuralab.train import checkpoint, distributed
from neuralab.train.batches import ImageBatches, RandomWindows, Streams
from neuralab.train.metrics import MetricsLogger
from neuralab.train.optim import build_optimizer, lr_factor, set_lr

Callback = Callable[[dict[str, Any]], None]  # observes each metrics record; never steers


def new_run_dir(
    run_dir: str | Path | None, cfg: RunConfig, name: str | None = None, command: str = ""
) -> Path:
    """Create a fresh run directory holding ``cfg``; an existing non-empty one is never
    overwritten. ``command`` continues such a run (default: ``neuralab train``, or
    ``neuralab pretrain`` for self-supervised pretraining)."""
    command = command or ("neuralab pretrain" if cfg.ssl.method != "none" else "neuralab train")
    default = name or f"{cfg.data.name}_{cfg.model.name}"
    return make_run_dir(run_dir, default, config_lib.to_toml(cfg), command)


def build_model(cfg: RunConfig, spec: data.DatasetSpec, x_train: torch.Tensor) -> torch.nn.Module:
    """The configured model, with normalisation statistics of the training split inside it;
    for self-supervised pretraining (``ssl.method``), wrapped with its pretext head."""
    mean, std = data.channel_stats(x_train)
    model = create_model(
        cfg.model.name,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        image_size=spec.height,
        mean=mean,
        std=std,
        **cfg.model.options,
    )
    if cfg.ssl.method != "none":
        from neuralab.ssl.model import build_ssl_model

        return build_ssl_model(cfg.ssl, model)
    return model


def train_device(name: str) -> torch.device:
    """The device ``train.device`` names: "auto" is the GPU when there is one."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but PyTorch sees no CUDA GPU here; use train.device=cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train.precision`` means on ``device`` (None: plain fp32)."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # absent in some builds
        return torch.bfloat16 if amx and amx() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def check_model_kind(cfg: RunConfig, kind: str | None = None) -> None:
    """A language model on images, or an image model on text, is a one-line UserError."""
    kind = kind or ("text" if is_text(cfg.data) else "image")
    if model_kind(cfg.model.name) != kind:
        what = "text" if kind == "text" else f"images ({cfg.data.name})"
        raise UserError(
            f"model {cfg.model.name!r} cannot learn from {what}; "
            f"{kind} models: {', '.join(list_models(kind=kind))}"
        )


def build_language_model(cfg: RunConfig, vocab_size: int) -> LanguageModel:
    """The configured language model for a vocabulary of ``vocab_size`` tokens."""
    check_model_kind(cfg, "text")
    return create_model(cfg.model.name, **{"vocab_size": vocab_size, **cfg.model.options})


def _prepare_text(cfg: RunConfig, run_dir: Path, resume: bool):
    """Model, training batches, (x_val, y_val) and split sizes of a text run.

    The vocabulary is saved in the run directory (``vocab.json``) at the start and read back
    on resume, so token ids never change under a run, and sampling needs no data.
    """
    vocab_path = run_dir / "vocab.json"
    tokenizer = data.CharTokenizer.load(vocab_path) if resume else None
    tokenizer, splits = data.load_token_splits(cfg.data, tokenizer)
    if not resume:
        tokenizer.save(vocab_path)
    seed_everything(cfg.seed)
    model = build_language_model(cfg, tokenizer.vocab_size)
    block, batch_size = model.config.block_size, cfg.train.batch_size
    if cfg.data.batching == "streams":
        batches = Streams(splits["train"], batch_size, block)
        val = data.eval_streams(splits["val"])
    else:
        batches = RandomWindows(splits["train"], batch_size, block, cfg.seed)
        val = data.eval_windows(splits["val"], block)
    if cfg.data.batching == "streams" and not model.recurrent:
        raise UserError(
            f"data.batching=streams carries a hidden state, which model {cfg.model.name!r} "
            "does not have; use data.batching=windows"
        )
    sizes = {"train/tokens": len(splits["train"]), "val/tokens": len(splits["val"])}
    return model, batches, val, sizes


class _StopRequest:
    """First Ctrl-C (or SIGTERM) asks the loop to stop at the next step boundary
    with a checkpoint; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def fit(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callback] = (),
) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (created by ``new_run_dir``, or an existing run to resume).

    Returns the summary that is also written to ``results.json`` (without test
    metrics; those come from ``evaluate.test``). ``summary["status"]`` is
    "finished", "early-stopped" or "interrupted".
    """
    tc = cfg.train
    world = distributed.init()
    threads = set_threads(tc.threads)
    _check_parallel(cfg, world)
    device = train_device(tc.device)
    amp_dtype = autocast_dtype(tc.precision, device)

    # 1. prepare data and 2. design the model (data first: the model's input statistics and
    # vocabulary come from it; the test split is not loaded here)
    if is_text(cfg.data):
        model, batches, (x_val, y_val), examples = _prepare_text(cfg, run_dir, resume)
        num_classes = model.config.vocab_size
    else:
        spec = data.DATASETS.get(cfg.data.name)
        x_train, y_train = data.load_split(cfg.data, "train")
        x_val, y_val = data.load_split(cfg.data, "val")
        check_model_kind(cfg, "image")
        seed_everything(cfg.seed)
        model = build_model(cfg, spec, x_train)
        batches = ImageBatches(
            x_train,
            y_train,
            tc.batch_size,
            cfg.seed,
            augment=cfg.data.augment,
            crop_pad=spec.crop_pad,
            hflip=spec.hflip,
        )
        examples = {"train/examples": len(x_train), "val/examples": len(x_val)}
        num_classes = spec.num_classes
    steps_per_epoch = batches.steps_per_epoch
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    model = model.to(device)
    x_val, y_val = x_val.to(device), y_val.to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task = build_task(cfg, num_classes)
    # float16 needs its loss scaled so small gradients do not flush to zero (Micikevicius et
    # al. 2018); disabled, the scaler passes everything through unchanged
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    # the compiled module shares the model's parameters; checkpoints save the eager model's
    # state_dict, so they never carry torch.compile's "_orig_mod." prefix
    train_model = torch.compile(model) if tc.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg.optim)
    ema = None
    if tc.ema > 0:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True)
    eval_model = ema.module if ema is not None else model

    state = Progress()
    if resume:
        ckpt = checkpoint.read(run_dir, "last")
        model.load_state_dict(ckpt.model)
        if ema is not None:
            if ckpt.ema is None:
                raise UserError(f"{ckpt.path} has no EMA weights but train.ema is set")
            ema.load_state_dict(ckpt.ema)
        optimizer.load_state_dict(ckpt.state["optimizer"])
        if "scaler" in ckpt.state:
            scaler.load_state_dict(ckpt.state["scaler"])
        task.load_state_dict(ckpt.state.get("task", {}))
        set_rng_state(ckpt.state["rng"])
        state = Progress(**ckpt.meta["progress"])
        if state.step >= total_steps:
            raise UserError(
                f"{run_dir} already finished its {total_steps} steps; nothing to resume"
            )

    model_meta = {"name": cfg.model.name, "config": asdict(model.config)}
    ckpt_root = run_dir / "checkpoints"
    logger = MetricsLogger(run_dir, start_step=state.step) if world.main else None

    def save(best: bool) -> None:
        if not world.main:
            return
        meta = {"progress": asdict(state), "model": model_meta, "dataset": cfg.data.name}
        train_state = {
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "task": task.state_dict(),
        }
        if scaler.is_enabled():
            train_state["scaler"] = scaler.state_dict()
        ema_weights = ema.state_dict() if ema is not None else None
        path = checkpoint.write(
            ckpt_root,
            state.step,
            model=model.state_dict(),
            ema=ema_weights,
            state=train_state,
            meta=meta,
        )
        checkpoint.point(ckpt_root, "last", path)
        if best:
            checkpoint.point(ckpt_root, "best", path)
        checkpoint.prune(ckpt_root)

    def record(values: dict[str, Any]) -> None:
        if logger is None:
            return
        rec = {
            "step": state.step,
            "epoch": round(state.step / steps_per_epoch, 4),
            "train_s": round(state.train_s, 3),  # time in training steps so far
            **values,
        }
        logger.log(rec)
        for cb in callbacks:
            cb(rec)

    # 3. train, validating as we go
    status = "finished"
    bar = tqdm(
        total=total_steps,
        initial=state.step,
        disable=not (progress and world.main),
        unit="step",
        dynamic_ncols=True,
        desc=f"{cfg.data.name}/{cfg.model.name}",
    )
    run_loss, run_correct, run_count = 0.0, 0, 0
    started = time.perf_counter() - state.wall_s
    # the bar and the metrics log are closed however the loop ends: a callback may raise
    # (a sweep prunes a trial that way), and a leaked TensorBoard writer keeps a thread
    log_closer = contextlib.closing(logger) if logger is not None else contextlib.nullcontext()
    with _StopRequest() as stop, contextlib.closing(bar), log_closer:
        while state.step < total_steps:
            step_started = time.perf_counter()
            xb, yb, fresh = batches.get(state.step)
            if fresh:
                task.reset()
            lr = cfg.optim.lr * lr_factor(cfg.sched, state.step, total_steps)
            set_lr(optimizer, lr)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            # this rank's share of the batch, in micro-batches; each loss is weighted by its
            # share of the global batch, so the summed gradients are those of its mean loss
            x_rank, y_rank = distributed.shard(xb.to(device), yb.to(device), world)
            loss_sum, correct, count = 0.0, 0, 0
            for x_micro, y_micro in zip(
                x_rank.tensor_split(tc.accum_steps),
                y_rank.tensor_split(tc.accum_steps),
                strict=True,
            ):
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, stats = task.loss(train_model, x_micro, y_micro)
                scaler.scale(loss * (len(x_micro) / len(xb))).backward()
                loss_sum += loss.item() * int(stats["count"])
                correct += int(stats.get("correct", 0))  # absent: the task has no accuracy
                has_acc = "correct" in stats
                count += int(stats["count"])
            loss_sum, correct, count, stops = distributed.all_reduce_(
                params, [loss_sum, correct, count, float(stop.requested)], world
            )
            step_loss = loss_sum / count
            if not math.isfinite(step_loss):
                last = ckpt_root / "last"
                kept = f"the last good checkpoint is {last}" if last.exists() else "none was saved"
                raise UserError(
                    f"loss became {step_loss} at step {state.step + 1}; stopped ({kept}); "
                    "lower optim.lr or set train.grad_clip"
                )
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            scaler.step(optimizer)  # skipped if float16 gradients overflowed
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            state.step += 1
            bar.update()

            run_loss += loss_sum
            run_correct += int(correct)
            run_count += int(count)
            state.train_s += time.perf_counter() - step_started
            if state.step % tc.log_every == 0 or state.step == total_steps:
                train_metrics = {"train/loss": run_loss / run_count, "lr": lr}
                if has_acc:
                    train_metrics["train/acc"] = run_correct / run_count
                record(train_metrics)
                bar.set_postfix(loss=f"{train_metrics['train/loss']:.3f}", refresh=False)
                run_loss, run_correct, run_count = 0.0, 0, 0

            end_of_epoch = state.step % steps_per_epoch == 0
            validate = (
                (tc.val_every and state.step % tc.val_every == 0)
                or (not tc.val_every and end_of_epoch)
                or state.step == total_steps
            )
            if validate:
                state.wall_s = time.perf_counter() - started
                improved, stale = False, False
                if world.main:
                    improved, stale = _validate(task, eval_model, x_val, y_val, tc, state, record)
                improved, stale = distributed.broadcast_flags([improved, stale], world)
                save(best=improved)
                best = f"{state.best:.4f}" if state.best is not None else "-"
                bar.set_postfix({f"best {tc.monitor}": best})
                if stale:
                    status = "early-stopped"
                    break
            elif tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                state.wall_s = time.perf_counter() - started
                save(best=False)
            # Ctrl-C on any rank stops every rank at the same step: the one whose all-reduce
            # first carried it
            stopping = stops > 0 if world.distributed else stop.requested
            if stopping:
                if not validate:
                    state.wall_s = time.perf_counter() - started
                    save(best=False)
                status = "interrupted"
                break
    summary = {
        "status": status,
        **state.best_metrics,
        "best_step": state.best_step,
        "train/steps": state.step,
        "train/total_steps": total_steps,
        "train/wall_s": round(state.wall_s, 3),
        "train/threads": threads,
        "train/device": device.type,
        "train/precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32"),
        "train/processes": world.size,
        "train/accum_steps": tc.accum_steps,
        "train/compile": tc.compile,
        **examples,
        "torch": torch.__version__,
    }
    if is_text(cfg.data):
        tokens_per_step = batches.batch_size * batches.block_size
        tokens_per_s = tokens_per_step * state.step / max(state.train_s, 1e-9)
        summary["train/tokens_per_s"] = round(tokens_per_s, 1)
    if world.main:
        (run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_parallel(cfg: RunConfig, world: distributed.World) -> None:
    """Gradient accumulation and several processes split each batch by rows; a one-line error
    where that cannot give the same update as the whole batch."""
    tc = cfg.train
    if tc.accum_steps < 1:
        raise UserError(f"train.accum_steps must be >= 1, got {tc.accum_steps}")
    per_rank = tc.batch_size // world.size
    if tc.batch_size % world.size or per_rank % tc.accum_steps:
        raise UserError(
            f"train.batch_size={tc.batch_size} must split evenly over {world.size} process(es) "
            f"x train.accum_steps={tc.accum_steps} micro-batches"
        )
    carry = is_text(cfg.data) and cfg.data.batching == "streams"
    if carry and (tc.accum_steps > 1 or world.distributed):
        raise UserError(
            "data.batching=streams carries each stream's hidden state from batch to batch, "
            "which train.accum_steps > 1 and torchrun would split; use data.batching=windows"
        )


def _validate(task, model, x_val, y_val, tc, state: Progress, record) -> tuple[bool, bool]:
    """Evaluate on the val split, log it, update the best; returns (improved, stop_early)."""
    if len(x_val) == 0:  # no val split: the latest checkpoint is the best one
        state.best_step = state.step
        return True, False
    metrics = task.validate(model, x_val, y_val, tc.eval_batch_size)
    record(metrics)
    if tc.monitor not in metrics:
        raise UserError(f"train.monitor={tc.monitor} is not measured here; it has: {list(metrics)}")
    value = metrics[tc.monitor]
    higher_is_better = tc.monitor.endswith("acc")
    improved = state.best is None or (
        value > state.best if higher_is_better else value < state.best
    )
    if improved:
        state.best, state.best_step, state.stale_validations = value, state.step, 0
        state.best_metrics = metrics
    else:
        state.stale_validations += 1
    return improved, bool(tc.early_stopping and state.stale_validations >= tc.early_stopping)
