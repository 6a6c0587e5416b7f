"""Load a trained model, and the test step: the best checkpoint on the test split, once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from neuralab import config as config_lib
from neuralab import data
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.tasks import ClassifyTask, LanguageModelTask
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
    weights = ckpt.model
    if ckpt.ema is not None:
        weights = {k.removeprefix("module."): v for k, v in ckpt.ema.items() if k != "n_averaged"}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"{ckpt.path} does not fit model {spec['name']!r}: {first}") from None
    return model.eval()


def test(run_dir: str | Path, which: str = "best", data_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on the test split; merge the figures into ``results.json``."""
    from neuralab.plots import plot_confusion

    run_dir = Path(run_dir)
    cfg = config_lib.load_run(run_dir)
    model = load_model(run_dir, which)
    meta = checkpoint.read(run_dir, which, with_state=False).meta
    data_cfg = dataclasses.replace(cfg.data, data_dir=data_dir) if data_dir else cfg.data
    if data.is_text(cfg.data):
        out = _test_text(run_dir, model, data_cfg, cfg.train.eval_batch_size)
        out.update({"test/checkpoint": which, "test/step": meta["progress"]["step"]})
        _merge_results(run_dir, out)
        return out
    spec = data.DATASETS.get(cfg.data.name)
    x, y = data.load_split(data_cfg, "test")
    task = ClassifyTask(spec.num_classes)
    result = task.evaluate(model, x, y, cfg.train.eval_batch_size)
    out = {
        "test/acc": result["acc"],
        "test/loss": result["loss"],
        "test/examples": len(x),
        "test/checkpoint": which,
        "test/step": meta["progress"]["step"],
        "test/per_class_acc": dict(zip(spec.classes, result["per_class_acc"], strict=True)),
        "test/confusion": result["confusion"].tolist(),
    }
    _merge_results(run_dir, out)
    plot_confusion(result["confusion"], spec.classes, run_dir / "plots" / "confusion.png")
    return out


def _test_text(run_dir: Path, model: nn.Module, data_cfg, batch_size: int) -> dict[str, Any]:
    """Loss, bits per character and perplexity on the test split of a text run, read with
    the run's own vocabulary: windows of the model's context for a Transformer, long
    streams with the state carried for a recurrent model (as in validation)."""
    tokenizer = data.CharTokenizer.load(run_dir / "vocab.json")
    _, splits = data.load_token_splits(data_cfg, tokenizer)
    if model.recurrent:
        x, y = data.eval_streams(splits["test"])
    else:
        x, y = data.eval_windows(splits["test"], model.config.block_size)
    result = LanguageModelTask(model.config.vocab_size).evaluate(model, x, y, batch_size)
    return {f"test/{k}": v for k, v in result.items()}


def _merge_results(run_dir: Path, out: dict[str, Any]) -> None:
    """Add ``out`` to the run's ``results.json``."""
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.update(out)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
