"""Run directories: create one (never overwriting), read what one holds, share the CPU; and
the one type coercer that configs and model options go through.

Ground level: every kind of run (supervised, self-supervised, reinforcement learning, sweeps)
keeps its results in a run directory made and read here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuralab.errors import UserError


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint's meta.json so that it resumes exactly.

    ``step`` counts what the run's length is measured in: optimizer steps for the training
    loop, environment steps for reinforcement learning (whose ``update`` counts updates).
    """

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    stale_validations: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0  # time in training steps only (no validation, no checkpoints)
    best_metrics: dict[str, float] = field(default_factory=dict)
    update: int = 0


LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # run directories this process writes: path -> open lock file


def lock_run_dir(path: str | Path) -> Path:
    """Make this process the one writer of run directory ``path``, until it exits.

    An exclusive ``flock`` on ``path/.lock``, which holds the writer's pid: the OS releases it
    when the process ends however it ends (``kill -9`` included), so no lock is ever stale. A
    second writer gets a one-line ``UserError`` naming the holder. Locking a directory this
    process already holds does nothing."""
    path = Path(path)
    key = path.resolve()
    if key in _held:
        return path
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UserError(
            f"run directory {path} is in use by process {holder}; wait for it to finish, "
            "or pick another --run-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd
    return path


def release_run_dir(path: str | Path) -> None:
    """Stop being the writer of ``path`` (a process that trains many runs, a sweep worker or a
    notebook, releases each when its training ends)."""
    fd = _held.pop(Path(path).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the file releases the flock


# what a run that stopped before its first checkpoint leaves behind (a failed or interrupted
# set-up, a kill before the first validation): nothing to resume, so such a directory is reused
UNSTARTED = {
    LOCK_FILE, "config.toml", "vocab.json", "tokenizer.json", "metrics.jsonl", "tensorboard"
}  # fmt: skip


def make_run_dir(
    run_dir: str | Path | None, default_name: str, config_text: str, command: str
) -> Path:
    """``run_dir``, or ``runs/<default_name>-<time>`` when it is None, created, locked for
    this process (``lock_run_dir``) and holding ``config.toml``. A directory that holds a run
    is a UserError that says how to continue it (``<command> --resume <dir>``); one that holds
    only what a run that stopped before its first checkpoint left (``UNSTARTED``) is reused."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{default_name}-{stamp}"
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
    else:
        path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--run-dir {path} is a file, not a directory; pick another --run-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create run directory {path}: {err.strerror}") from None
    lock_run_dir(path)
    if {p.name for p in path.iterdir()} - UNSTARTED:
        release_run_dir(path)  # not ours to write
        raise UserError(
            f"run directory {path} already exists; pick another --run-dir, "
            f"or continue it with: {command} --resume {path}"
        )
    (path / "config.toml").write_text(config_text)
    return path


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed over ``path`` when the block ends
    without an error, removed otherwise, so ``path`` is never half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` or its previous contents, never half of it."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path) -> dict[str, Any]:
    """A run's JSON file (``results.json``, an attack report); {} when absent, and a one-line
    UserError when it is not JSON."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is corrupt ({err}); delete it, or test the run again") from None


def writable_file(out: Path, *, force: bool = True) -> Path:
    """``out`` if a file may be written there: not a directory, and (unless ``force``) not an
    existing file; a one-line UserError otherwise. Its directory is created."""
    if out.is_dir():
        raise UserError(f"{out} is a directory; give a file name, e.g. {out / 'report.html'}")
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it, or another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror}") from None
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (an absent file has none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads (0 = every core this process may run on, shared evenly by
    the processes torchrun started on this machine: its LOCAL_WORLD_SIZE)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = threads or max(1, len(os.sched_getaffinity(0)) // local)
    import torch  # here, not at the top: the CLI's start-up needs this module, not torch

    torch.set_num_threads(n)
    return n


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic: AMX tiles or AVX512-BF16 (without either, torch
    emulates bf16, slower than fp32)."""
    import torch

    native = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # absent in some builds
    return any(getattr(torch.cpu, name, lambda: False)() for name in native)


def autocast_dtype(precision: str, device: Any) -> Any:
    """The autocast dtype ``precision`` (fp32, bf16, fp16 or auto) means on ``device``, a
    ``torch.device`` (None: plain fp32). One policy for training, attacks and RL.

    "auto" is bf16 on a CUDA GPU that computes in it, and on a CPU with bf16 arithmetic (AMX
    tiles or AVX512-BF16), else fp32. On a 2-core AMD EPYC with AVX512-BF16 and no AMX, bf16
    trains the classic char-GPT 1.6-1.9x, ``fashion_cnn`` and the char-LSTM ~1.35x, and Pong's
    ``NatureCNN`` 1.3x faster than fp32 (issues 26 and 27); a CPU without either emulates
    bf16, slower than fp32.
    """
    import torch

    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if device.type == "cpu" and cpu_computes_bf16() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def coerce(value: Any, tp: Any, *, text: bool = False) -> Any:
    """``value`` as type ``tp`` (a bool, int, float, str, tuple of them, or optional one), or
    TypeError. Ints widen to floats and lists become tuples; nothing else is converted, unless
    ``text``: then ``value`` may be written as in a config file or a ``key=value`` override (a
    string parsed as JSON, ``true``/``false``, ``1,2`` or ``a,b`` for a tuple) and whole
    floats are ints.
    """
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if text and isinstance(value, str) and tp is not str:
        raw = value.strip()
        if origin is tuple and not raw.startswith("["):
            raw = f"[{raw}]"
        try:
            value = json.loads(raw.replace("'", '"')) if raw else raw
        except json.JSONDecodeError:
            if origin is tuple and typing.get_args(tp)[0] is str:  # a,b: a tuple of words
                value = [word.strip() for word in raw[1:-1].split(",")]
            elif tp is not bool or raw.lower() not in ("true", "false"):
                raise TypeError(value) from None
            else:
                value = raw.lower() == "true"
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError(value)
        args = typing.get_args(tp)
        inner = [args[0]] * len(value) if len(args) == 1 or args[-1] is Ellipsis else list(args)
        if len(inner) != len(value):
            raise TypeError(value)
        return tuple(coerce(v, h, text=text) for v, h in zip(value, inner, strict=True))
    if isinstance(value, bool) and tp is not bool:  # bool is an int subclass; True is no width
        raise TypeError(value)
    if tp is float and isinstance(value, int):
        return float(value)
    if tp is int and text and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, tp):
        raise TypeError(value)
    return value
