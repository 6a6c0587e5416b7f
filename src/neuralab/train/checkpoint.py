"""Checkpoints that survive crashes and never run code from a file.

Layout of ``<run>/checkpoints/``::

    step-000400/  model.safetensors  [ema.safetensors]  state.pt  meta.json
    last -> step-000400          best -> step-000300

Weights are safetensors; the training state (optimizer, RNG states) is a dict of
tensors and numbers read back with ``torch.load(weights_only=True)``; the rest
is JSON. A step directory is written under a temporary name and renamed when
complete, then ``last``/``best`` are re-pointed by atomically replacing a
symlink, so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from neuralab.errors import UserError


@dataclass
class Checkpoint:
    path: Path
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: dict[str, Any]
    meta: dict[str, Any]


def _tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}


def write(
    root: Path,
    step: int,
    *,
    model: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``root/step-NNNNNN`` completely, then rename it into place; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_file(_tensors(model), tmp / "model.safetensors")
        if ema is not None:
            save_file(_tensors(ema), tmp / "ema.safetensors")
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except (OSError, RuntimeError) as err:  # disk full: torch.save raises RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"could not write a checkpoint in {root} ({err}); is the disk full? "
            "The previous checkpoint is intact: free space, then --resume"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def point(root: Path, name: str, target: Path) -> None:
    """Atomically make ``root/name`` a symlink to ``target`` (a step directory in root).

    In a run copied with its links followed (``cp -rL``), ``root/name`` is a directory: it is
    moved aside first and removed once the new link is in place."""
    tmp = root / f".{name}.link"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.name)
    dest, aside = root / name, root / f".{name}.old"
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(dest, aside)
    os.replace(tmp, dest)
    shutil.rmtree(aside, ignore_errors=True)


def prune(root: Path) -> None:
    """Remove step directories that neither ``last`` nor ``best`` points to."""
    keep = {(root / n).resolve() for n in ("last", "best") if (root / n).exists()}
    for d in root.glob("step-*"):
        if d.resolve() not in keep:
            shutil.rmtree(d, ignore_errors=True)
    for d in [*root.glob(".step-*"), *root.glob(".*.old")]:
        shutil.rmtree(d, ignore_errors=True)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(
            f"{path} is not a valid safetensors file ({err}); re-train or re-copy it"
        ) from None


def load_state(path: Path) -> dict[str, Any]:
    """Training state through ``weights_only=True``: a pickle that would run code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError: all mean "not ours"
        raise UserError(
            f"refusing {path}: it is not a weights-only training state ({type(err).__name__}), "
            "so it will not be loaded"
        ) from None


def misfits(
    module: torch.nn.Module, weights: dict[str, torch.Tensor], *, missing_ok: bool = False
) -> list[str]:
    """What keeps ``weights`` from loading into ``module``: keys it lacks (unless
    ``missing_ok``), keys it does not have, and shapes that differ; the first 3 of each."""
    own = module.state_dict()
    missing = [] if missing_ok else [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    problems = []
    for what, items in (
        ("missing", missing),
        ("unexpected", extra),
        ("shape (saved vs model)", shapes),
    ):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{what}: {', '.join(items[:3])}{more}")
    return problems


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """``module.load_state_dict(weights)``, or one line saying which keys and shapes differ
    (a checkpoint of another model, or of this model with other options)."""
    problems = misfits(module, weights)
    if problems:
        raise UserError(
            f"{source} does not fit this {type(module).__name__}: {'; '.join(problems)}"
        )
    module.load_state_dict(weights)


def read(run_dir: Path, which: str = "last", *, with_state: bool = True) -> Checkpoint:
    """Read ``<run_dir>/checkpoints/<which>``; ``which`` is 'last', 'best' or a step directory."""
    path = run_dir / "checkpoints" / which
    if not (path / "meta.json").is_file():
        raise UserError(
            f"no '{which}' checkpoint in {run_dir} (looked for {path}/meta.json); "
            "is this a neuralab run directory that got past its first validation?"
        )
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}/meta.json is corrupt ({err})") from None
    model = _load_tensors(path / "model.safetensors")
    ema_path = path / "ema.safetensors"
    ema = _load_tensors(ema_path) if ema_path.exists() else None
    state = load_state(path / "state.pt") if with_state else {}
    return Checkpoint(path=path.resolve(), model=model, ema=ema, state=state, meta=meta)


def weights_of(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The weights a checkpoint was validated with: its EMA when the run kept one."""
    if ckpt.ema is None:
        return ckpt.model
    return {k.removeprefix("module."): v for k, v in ckpt.ema.items() if k != "n_averaged"}


def start_from(module: torch.nn.Module, run_dir: Path) -> int:
    """Load the best weights of ``run_dir`` into ``module`` (``train.init_from``, fine-tuning):
    every tensor of that checkpoint must be one of ``module``'s, by name and shape; the
    module's other tensors (a new head) keep their fresh values. Returns how many were
    loaded; anything that does not fit is one line."""
    ckpt = read(Path(run_dir), "best", with_state=False)
    weights = weights_of(ckpt)
    problems = misfits(module, weights, missing_ok=True)
    if problems:
        raise UserError(
            f"train.init_from={run_dir}: its {ckpt.meta['model']['name']} does not fit this "
            f"model ({'; '.join(problems)}); give both the same architecture options"
        )
    module.load_state_dict({**module.state_dict(), **weights})
    return len(weights)
