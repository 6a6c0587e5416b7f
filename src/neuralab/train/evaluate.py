"""Load a trained model, and the test step: the best checkpoint on the test split, once."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from torch import nn

from neuralab import config as config_lib
from neuralab.models import create_model
from neuralab.runs import read_json, write_atomic
from neuralab.tasks import build_task
from neuralab.train import checkpoint


def load_model(run_dir: str | Path, which: str = "best") -> nn.Module:
    """The trained model of ``run_dir`` in eval mode (an image model takes images in [0, 1]).

    ``which`` is "best" (best validation score) or "last". When the run kept an
    EMA of the weights, the EMA weights are the ones that were validated, so
    they are the ones returned.
    """
    ckpt = checkpoint.read(Path(run_dir), which, with_state=False)
    spec = ckpt.meta["model"]
    model = create_model(spec["name"], **spec["config"])
    checkpoint.load_weights(model, checkpoint.weights_of(ckpt), ckpt.path)
    return model.eval()


def test(run_dir: str | Path, which: str = "best", data_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on the test split with the run's kind's test step; merge the
    figures into ``results.json``."""
    run_dir = Path(run_dir)
    cfg = config_lib.load_run(run_dir)
    model = load_model(run_dir, which)
    meta = checkpoint.read(run_dir, which, with_state=False).meta
    data_cfg = dataclasses.replace(cfg.data, data_dir=data_dir) if data_dir else cfg.data
    out = build_task(cfg).test(cfg, run_dir, model, data_cfg)
    out.update({"test/checkpoint": which, "test/step": meta["progress"]["step"]})
    _merge_results(run_dir, out, which)
    return out


def _merge_results(run_dir: Path, out: dict[str, Any], which: str) -> None:
    """Add ``out`` to the run's ``results.json``: as ``test/...`` for the best checkpoint,
    the run's headline result, and as ``test/<which>/...`` for another, which never
    replaces it. A run directory that cannot be written is said in one line (the result
    itself was computed and is returned)."""
    if which != "best":
        out = {f"test/{which}/{k.removeprefix('test/')}": v for k, v in out.items()}
    path = run_dir / "results.json"
    results = read_json(path)
    results.update(out)
    try:
        write_atomic(path, json.dumps(results, indent=2) + "\n")
    except OSError as err:
        print(f"neuralab: could not save the result in {path}: {err.strerror}", file=sys.stderr)
