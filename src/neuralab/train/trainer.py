"""The pieces of the training loop: what one optimizer step, one validation and one
checkpoint do, for any kind of run.

``Trainer`` holds the model, its optimizer, the gradient scaler and the EMA of the weights, and
asks the run's task for the loss of each micro-batch; it never asks which kind of run it is.
"""

from __future__ import annotations

import itertools
import math
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from neuralab.config import RunConfig, TrainConfig
from neuralab.errors import UserError
from neuralab.runs import Progress, autocast_dtype
from neuralab.seed import rng_state, set_rng_state
from neuralab.tasks import Setup, Task
from neuralab.train import checkpoint, distributed
from neuralab.train.optim import build_optimizer, lr_factor, set_lr


def train_device(name: str) -> torch.device:
    """The device ``train.device`` names: "auto" is the GPU when there is one."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but PyTorch sees no CUDA GPU here; use train.device=cpu")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def check_parallel(tc: TrainConfig, world: distributed.World) -> None:
    """Gradient accumulation and several processes split each batch by rows; a one-line error
    where that cannot give the same update as the whole batch."""
    per_rank = tc.batch_size // world.size
    if tc.batch_size % world.size or per_rank % tc.accum_steps:
        raise UserError(
            f"train.batch_size={tc.batch_size} must split evenly over {world.size} process(es) "
            f"x train.accum_steps={tc.accum_steps} micro-batches"
        )


def _sync_batchnorm(model: torch.nn.Module, world: distributed.World, device: torch.device):
    """Under torchrun, BatchNorm must normalise by the statistics of the global batch for a
    step to equal the one-process step: SyncBatchNorm (Ioffe & Szegedy 2015 over all ranks),
    which PyTorch runs on GPUs only; on CPUs such a model is refused rather than silently
    trained with per-process statistics."""
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not (world.distributed and has_bn):
        return model
    if device.type != "cuda":
        raise UserError(
            "this model has BatchNorm, whose statistics would differ per process under torchrun "
            "on CPUs (SyncBatchNorm needs GPUs); train it in one process, or use a model "
            "without BatchNorm (e.g. model.name=mlp model.batchnorm=false)"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


@dataclass
class StepResult:
    """One optimizer step's summed loss, correct count and count over every rank, whether the
    task counts right answers, and whether any rank asked to stop."""

    loss_sum: float
    correct: int
    count: int
    has_acc: bool
    stop: bool  # under torchrun: some rank had been asked to stop when this step began


class Meter:
    """Running means of the training loss and accuracy between two log records."""

    def __init__(self) -> None:
        self.loss, self.correct, self.count, self.has_acc = 0.0, 0, 0, False

    def add(self, r: StepResult) -> None:
        self.loss += r.loss_sum
        self.correct += r.correct
        self.count += r.count
        self.has_acc = r.has_acc

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "correct": self.correct, "count": self.count}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.loss, self.correct, self.count = saved["loss"], saved["correct"], saved["count"]

    def pop(self, lr: float) -> dict[str, float]:
        """``train/loss`` (and ``train/acc``) since the last call, and the learning rate."""
        out = {"train/loss": self.loss / self.count, "lr": lr}
        if self.has_acc:
            out["train/acc"] = self.correct / self.count
        self.loss, self.correct, self.count = 0.0, 0, 0
        return out


class Trainer:
    """The model of a run with its optimizer, gradient scaler and EMA, on its device."""

    def __init__(
        self, cfg: RunConfig, task: Task, setup: Setup, run_dir: Path, world: distributed.World
    ) -> None:
        tc = self.tc = cfg.train
        self.cfg, self.task, self.world, self.batches = cfg, task, world, setup.batches
        self.device = train_device(tc.device)
        self.amp_dtype = autocast_dtype(tc.precision, self.device)
        model = self.model = _sync_batchnorm(setup.model, world, self.device).to(self.device)
        self.x_val, self.y_val = (t.to(self.device) for t in setup.val)
        if tc.channels_last:
            _channels_last(model)
        # float16 needs its loss scaled so small gradients do not flush to zero (Micikevicius
        # et al. 2018); disabled, the scaler passes everything through unchanged
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        # the compiled module shares the model's parameters; checkpoints save the eager
        # model's state_dict, so they never carry torch.compile's "_orig_mod." prefix
        self.train_model = torch.compile(model) if tc.compile else model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(model, cfg.optim)
        self.ema = None
        if tc.ema > 0:
            multi_avg_fn = get_ema_multi_avg_fn(tc.ema)
            self.ema = AveragedModel(model, multi_avg_fn=multi_avg_fn, use_buffers=True)
        self.eval_model = self.ema.module if self.ema is not None else model
        self.total_steps = tc.max_steps or tc.epochs * self.batches.steps_per_epoch
        self.ckpt_root = run_dir / "checkpoints"
        # the running training loss since the last log record: checkpointed, so that a resumed
        # run logs the same means as an uninterrupted one
        self.meter = Meter()

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "fp32")

    def validation_due(self, step: int) -> bool:
        """Whether to validate after ``step`` steps: every ``train.val_every`` steps, else at
        the end of each epoch, and at the end."""
        every = self.tc.val_every or self.batches.steps_per_epoch
        return step % every == 0 or step == self.total_steps

    def summary(self, state: Progress, status: str, threads: int, setup: Setup) -> dict:
        """What ``results.json`` holds after training: the best validation metrics, how the
        run was made, and the kind's own figures."""
        tc = self.tc
        return {
            "status": status,
            **state.best_metrics,
            "best_step": state.best_step,
            "train/steps": state.step,
            "train/total_steps": self.total_steps,
            "train/wall_s": round(state.wall_s, 3),
            "train/threads": threads,
            "train/device": self.device.type,
            "train/precision": self.precision,
            "train/processes": self.world.size,
            "train/accum_steps": tc.accum_steps,
            "train/compile": tc.compile,
            **setup.sizes,
            "torch": torch.__version__,
            **self.task.summary(setup, state.step, state.train_s),
        }

    def lr(self, step: int) -> float:
        return self.cfg.optim.lr * lr_factor(self.cfg.sched, step, self.total_steps)

    def step(self, step: int, stop_requested: bool) -> StepResult:
        """Optimizer step number ``step`` (0-based) on batch ``step``."""
        xb, yb, fresh = self.batches.get(step)
        if fresh:
            self.task.reset()
        set_lr(self.optimizer, self.lr(step))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # this rank's share of the batch, in micro-batches; each loss is weighted by its share
        # of the global batch, so the summed gradients are those of its mean loss
        x_rank, y_rank = distributed.shard(xb.to(self.device), yb.to(self.device), self.world)
        loss_sum, correct, count, has_acc = 0.0, 0, 0, False
        accum = self.tc.accum_steps
        for x_micro, y_micro in zip(
            x_rank.tensor_split(accum), y_rank.tensor_split(accum), strict=True
        ):
            dtype = self.amp_dtype
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                loss, stats = self.task.loss(self.train_model, x_micro, y_micro)
            self.scaler.scale(loss * (len(x_micro) / len(xb))).backward()
            loss_sum += loss.item() * int(stats["count"])
            correct += int(stats.get("correct", 0))  # absent: the task has no accuracy
            has_acc = "correct" in stats
            count += int(stats["count"])
        loss_sum, correct, count, stops = distributed.all_reduce_(
            self.params, [loss_sum, correct, count, float(stop_requested)], self.world
        )
        if not math.isfinite(loss_sum / count):
            last = self.ckpt_root / "last"
            kept = f"the last good checkpoint is {last}" if last.exists() else "none was saved"
            raise UserError(
                f"loss became {loss_sum / count} at step {step + 1}; stopped ({kept}); "
                "lower optim.lr or set train.grad_clip"
            )
        if self.tc.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.tc.grad_clip)
        self.scaler.step(self.optimizer)  # skipped if float16 gradients overflowed
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return StepResult(loss_sum, int(correct), int(count), has_acc, stops > 0)

    def validate(self, state: Progress, record) -> tuple[bool, bool]:
        """Evaluate on the val split, log it, update the best; (improved, stop early), the same
        on every rank."""
        improved, stale = False, False
        if self.world.main:
            improved, stale = self._validate(state, record)
        return tuple(distributed.broadcast_flags([improved, stale], self.world))

    def _validate(self, state: Progress, record) -> tuple[bool, bool]:
        tc = self.tc
        if len(self.x_val) == 0:  # no val split: the latest checkpoint is the best one
            state.best_step = state.step
            return True, False
        metrics = self.task.validate(self.eval_model, self.x_val, self.y_val, tc.eval_batch_size)
        record(metrics)
        if tc.monitor not in metrics:
            raise UserError(
                f"train.monitor={tc.monitor} is not measured here; it has: {list(metrics)}"
            )
        value = metrics[tc.monitor]
        higher_is_better = self.task.higher_is_better(tc.monitor)
        improved = state.best is None or (
            value > state.best if higher_is_better else value < state.best
        )
        if improved:
            state.best, state.best_step, state.stale_validations = value, state.step, 0
            state.best_metrics = metrics
        else:
            state.stale_validations += 1
        return improved, bool(tc.early_stopping and state.stale_validations >= tc.early_stopping)

    def restore(self, run_dir: Path) -> Progress:
        """Weights, optimizer, scaler, EMA, the task's state and every RNG state of the
        run's last checkpoint; returns where the run stood."""
        if not (run_dir / "checkpoints" / "last").exists():
            raise UserError(
                f"{run_dir} stopped before its first checkpoint, so there is nothing to resume; "
                "run the same command again with this --run-dir (the directory is reused)"
            )
        ckpt = checkpoint.read(run_dir, "last")
        checkpoint.load_weights(self.model, ckpt.model, ckpt.path)
        if self.ema is not None:
            if ckpt.ema is None:
                raise UserError(f"{ckpt.path} has no EMA weights but train.ema is set")
            checkpoint.load_weights(self.ema, ckpt.ema, ckpt.path)
        try:
            self.optimizer.load_state_dict(ckpt.state["optimizer"])
        except (KeyError, ValueError) as err:
            raise UserError(f"{ckpt.path}: its optimizer state does not fit ({err})") from None
        if "scaler" in ckpt.state:
            self.scaler.load_state_dict(ckpt.state["scaler"])
        self.task.load_state_dict(ckpt.state.get("task", {}))
        if "meter" in ckpt.state:
            self.meter.load_state_dict(ckpt.state["meter"])
        set_rng_state(ckpt.state["rng"])
        state = Progress(**ckpt.meta["progress"])
        if state.step >= self.total_steps:
            raise UserError(
                f"{run_dir} already finished its {self.total_steps} steps; nothing to resume"
            )
        return state

    def save(self, state: Progress, best: bool) -> None:
        """A checkpoint of everything ``restore`` reads; ``last`` (and ``best``) point to it."""
        if not self.world.main:
            return
        model_meta = {"name": self.cfg.model.name, "config": asdict(self.model.config)}
        meta = {"progress": asdict(state), "model": model_meta, "dataset": self.cfg.data.name}
        train_state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "task": self.task.state_dict(),
            "meter": self.meter.state_dict(),
        }
        if self.scaler.is_enabled():
            train_state["scaler"] = self.scaler.state_dict()
        path = checkpoint.write(
            self.ckpt_root,
            state.step,
            model=self.model.state_dict(),
            ema=self.ema.state_dict() if self.ema is not None else None,
            state=train_state,
            meta=meta,
        )
        checkpoint.point(self.ckpt_root, "last", path)
        if best:
            checkpoint.point(self.ckpt_root, "best", path)
        checkpoint.prune(self.ckpt_root)


class StopRequest:
    """First Ctrl-C (or SIGTERM) asks the loop to stop at the next step boundary
    with a checkpoint; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal = signal.SIGINT  # the one that asked (its number: 128 + it is the exit status)
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested, self.signal = True, signal.Signals(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _channels_last(model: torch.nn.Module) -> None:
    """Every 4D weight and buffer in the channels-last layout (NHWC), every 5D one (a 3D
    convolution's) in its 3D form (NDHWC); what ``model.to(memory_format=...)`` does for one
    rank, for both."""
    layouts = {4: torch.channels_last, 5: torch.channels_last_3d}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.dim() in layouts:
            tensor.data = tensor.data.contiguous(memory_format=layouts[tensor.dim()])
