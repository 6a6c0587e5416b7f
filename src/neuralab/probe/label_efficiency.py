"""How much a pretrained encoder saves in labels: the label-efficiency table.

For each label fraction (class-balanced subsets of the training split, fixed seeds) and each
seed, the test accuracy of:

- logistic regression and kNN on raw pixels (no network at all);
- a linear probe on a frozen, randomly initialised encoder of the same architecture (what the
  architecture gives for free: the floor of any pretraining);
- the same network trained from scratch, supervised, on the same labelled images (standard
  crop/flip augmentation, AdamW, cosine schedule, a fixed budget of steps, last weights);
- kNN and a linear probe on the pretrained encoder's frozen features;
- the pretrained encoder fine-tuned end to end on the labelled images, with a fresh head and
  exactly the from-scratch recipe (Chen et al. 2020's semi-supervised protocol): only the
  initial weights differ from the "scratch" row;
- the ceiling: a linear probe, fitted on the labelled images only, on the features of the same
  network trained supervised on *every* training label (the from-scratch recipe for five
  epochs; one network, seed 0, for the whole table). It is the only row that reads labels
  outside the subset: it shows what features this architecture can hold for the task, so the
  distance from the pretrained probe to it is what pretraining left on the table.

Mean ± std over the seeds go in ``RUN/probes/label_efficiency.json`` and one picture,
``RUN/plots/label_efficiency.png``. Probes choose their L2 strength as in
``neuralab.probe.linear`` (by cross-validation inside the labelled subset when it is a fraction);
from-scratch, fine-tuned and ceiling training use no val labels at all.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuralab import data
from neuralab.config import RunConfig
from neuralab.data.batches import ImageBatches
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.models.base import ImageClassifier
from neuralab.probe.linear import (
    Features,
    balanced_subset,
    knn_accuracy,
    linear_probe_accuracy,
    load_encoder,
    split_features,
)
from neuralab.seed import seed_everything
from neuralab.tasks import ClassifyTask
from neuralab.train.optim import build_optimizer, lr_factor
from neuralab.train.steps import train_steps

METHODS = {
    "raw_logistic": "raw pixels + logistic regression",
    "raw_knn": "raw pixels + kNN",
    "random_probe": "frozen random encoder + linear probe",
    "scratch": "same network from scratch (supervised)",
    "pretrained_knn": "pretrained encoder + kNN",
    "pretrained_probe": "pretrained encoder + linear probe",
    "pretrained_finetune": "pretrained encoder fine-tuned",
    "supervised_probe": "ceiling: supervised features (every label) + linear probe",
}


BATCH_SIZE = 128  # of from-scratch, fine-tuned and ceiling training


def supervised_steps(examples: int, scratch_steps: int) -> int:
    """The from-scratch budget: ``scratch_steps``, or five epochs of ``examples`` if more."""
    return max(scratch_steps, 5 * examples // BATCH_SIZE)


def train_supervised(
    cfg: RunConfig,
    model_config: dict[str, Any],
    x: Tensor,
    y: Tensor,
    steps: int,
    seed: int,
    encoder: ImageClassifier | None = None,
) -> ImageClassifier:
    """Model ``cfg.model.name`` with ``model_config``, initialised from ``seed`` (and then, if
    given, with every weight but the head's copied from ``encoder``), trained supervised on
    (x, y) for ``steps`` AdamW steps (cosine schedule, crop/flip augmentation as the dataset
    allows). ``encoder`` itself is not changed."""
    spec = data.DATASETS.get(cfg.data.name)
    seed_everything(seed)
    model = create_model(cfg.model.name, **model_config)
    if encoder is not None:
        pretrained = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head.")}
        missing = model.load_state_dict(pretrained, strict=False).missing_keys
        if {k.split(".")[0] for k in missing} - {"head"}:
            raise RuntimeError(f"the encoder lacks weights the model needs: {missing}")
    batches = ImageBatches(
        x, y, BATCH_SIZE, seed, augment=True, crop_pad=spec.crop_pad, hflip=spec.hflip
    )
    optim_cfg = type(cfg.optim)(lr=2e-3, weight_decay=5e-4)
    train_steps(
        model,
        ClassifyTask(spec.num_classes).loss,
        lambda step: batches.get(step)[:2],
        build_optimizer(model, optim_cfg),
        steps,
        lr_at=lambda step: optim_cfg.lr * lr_factor(cfg.sched, step, steps),
    )
    return model.eval()


def _summary(values: list[float]) -> dict[str, Any]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def label_efficiency(
    run_dir: str | Path,
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
    seeds: int = 3,
    k: int = 20,
    scratch_steps: int = 1000,
    which: str = "best",
    progress: bool = True,
) -> dict[str, Any]:
    """The label-efficiency table of a pretraining run (see the module docstring)."""
    run_dir = Path(run_dir)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    started = time.perf_counter()
    encoder, cfg = load_encoder(run_dir, which)
    model_config = dataclasses.asdict(encoder.config)  # normalisation statistics included
    num_classes = data.DATASETS.get(cfg.data.name).num_classes
    batch = cfg.train.eval_batch_size
    pretrained = split_features(encoder, cfg, batch)
    raw = split_features(None, cfg, batch)
    x_train, y_train = data.load_split(cfg.data, "train")
    x_test, y_test = data.load_split(cfg.data, "test")
    table: dict[str, dict[str, Any]] = {m: {} for m in METHODS}
    random_feats: dict[int, Features] = {}  # seed -> features of that random encoder
    ceiling_steps = supervised_steps(len(y_train), scratch_steps)
    ceiling = train_supervised(cfg, model_config, x_train, y_train, ceiling_steps, 0)
    supervised = split_features(ceiling, cfg, batch)
    for fraction in fractions:
        scores: dict[str, list[float]] = {m: [] for m in METHODS}
        for seed in range(seeds):
            subset = balanced_subset(y_train, fraction, seed, num_classes)
            scores["raw_logistic"].append(
                linear_probe_accuracy(raw, subset, num_classes)["test/acc"]
            )
            scores["raw_knn"].append(knn_accuracy(raw, subset, num_classes, k, 0.07))
            if seed not in random_feats:  # the same for every fraction: computed once
                torch.manual_seed(seed)
                random_encoder = create_model(cfg.model.name, **model_config).eval()
                random_feats[seed] = split_features(random_encoder, cfg, batch)
            scores["random_probe"].append(
                linear_probe_accuracy(random_feats[seed], subset, num_classes)["test/acc"]
            )
            steps = supervised_steps(len(subset), scratch_steps)
            for method, init in (("scratch", None), ("pretrained_finetune", encoder)):
                if init is None and seed == 0 and len(subset) == len(y_train):
                    model = ceiling  # every label, seed 0: the ceiling's network, trained once
                else:
                    model = train_supervised(
                        cfg, model_config, x_train[subset], y_train[subset], steps, seed, init
                    )
                tested = ClassifyTask(num_classes).evaluate(model, x_test, y_test, batch)
                scores[method].append(tested["acc"])
            scores["pretrained_knn"].append(knn_accuracy(pretrained, subset, num_classes, k, 0.07))
            scores["pretrained_probe"].append(
                linear_probe_accuracy(pretrained, subset, num_classes)["test/acc"]
            )
            scores["supervised_probe"].append(
                linear_probe_accuracy(supervised, subset, num_classes)["test/acc"]
            )
            if progress:
                done = ", ".join(f"{m} {v[-1]:.4f}" for m, v in scores.items())
                print(f"labels {fraction:g} seed {seed}: {done}", flush=True)
        for method, values in scores.items():
            table[method][f"{fraction:g}"] = {"labels": len(subset), **_summary(values)}
    result = {
        "run": str(run_dir),
        "checkpoint": which,
        "fractions": list(fractions),
        "seeds": seeds,
        "scratch_steps": scratch_steps,
        "ceiling_steps": ceiling_steps,
        "methods": METHODS,
        "table": table,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = run_dir / "probes" / "label_efficiency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["png"] = str(plot_label_efficiency(result, run_dir / "plots" / "label_efficiency.png"))
    return result


def plot_label_efficiency(result: dict[str, Any], out: Path) -> Path:
    """Test accuracy against the number of labelled images, one line per method."""
    from neuralab.plots import save_figure, subplots

    fig, ax = subplots(figsize=(7, 4.5))
    for method, label in METHODS.items():
        cells = [result["table"][method][f"{f:g}"] for f in result["fractions"]]
        ax.errorbar(
            [c["labels"] for c in cells],
            [100 * c["mean"] for c in cells],
            yerr=[100 * c["std"] for c in cells],
            marker="o",
            capsize=3,
            linestyle="--" if method == "supervised_probe" else "-",
            label=label,
        )
    ax.set(
        xscale="log",
        xlabel="labelled training images",
        ylabel="test accuracy (%)",
        title=f"label efficiency (mean ± std over {result['seeds']} seeds)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)
