"""``neuralab attack RUN`` on a segmenter or a detector: its metric under PGD (or FGSM)
against its own loss, for every eps.

Writes ``<run>/attacks/<name>.json`` (the clean and attacked mIoU and pixel accuracy, or mAP
and mAP@0.5, for each eps; the mean loss per PGD step; the parameters, n and seed) and, into
``<run>/plots/``, the loss per step and the first attacked scenes with their predictions.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from neuralab.attack.dense import DensePGD
from neuralab.errors import UserError
from neuralab.report.attacks import AttackSpec
from neuralab.tasks.detect import DetectTask
from neuralab.tasks.segment import SegmentTask


def build_dense_attack(spec: AttackSpec, model: nn.Module, eps: float, objective) -> DensePGD:
    """FGSM is one step of eps from the image itself; PGD ``steps`` steps of ``alpha``."""
    if spec.targeted or spec.restarts > 1:
        raise UserError(
            "segmenters and detectors take untargeted attacks without restarts "
            "(there is no one class to aim at, no one label to flip)"
        )
    if spec.method == "fgsm":
        return DensePGD(model, eps, max(eps, 1e-12), 1, objective, norm=spec.norm,
                        random_start=False)  # fmt: skip
    generator = torch.Generator().manual_seed(spec.seed)
    return DensePGD(model, eps, spec.alpha, spec.steps, objective, norm=spec.norm,
                    random_start=spec.random_start, generator=generator)  # fmt: skip


def attack_scenes(
    task: SegmentTask | DetectTask,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    out: Path,
) -> dict[str, Any]:
    """Attack the first ``spec.n`` test scenes of a seeded permutation; write the report."""
    from neuralab.plots import plot_attack_loss, plot_detections, plot_segmentation

    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(spec.seed))
    idx = order[: min(spec.n, len(x))]
    x, y = x[idx], y[idx]
    keys = task.headline

    def objective(outputs: Tensor, targets: Tensor) -> Tensor:
        return task.attack_loss(model, outputs, targets)

    def scores(images: Tensor) -> dict[str, float]:
        result = task.evaluate(model, images, y, spec.batch_size)
        return {k: result[k] for k in keys}

    clean = scores(x)
    results, losses, attacked = [], {}, x
    started = time.perf_counter()
    for eps in spec.eps:
        attack = build_dense_attack(spec, model, eps, objective)
        adversarial, curves = [], []
        for start in range(0, len(x), spec.batch_size):
            part = slice(start, start + spec.batch_size)
            adversarial.append(attack(x[part], y[part]))
            curves.append([v * len(x[part]) for v in attack.losses])
        attacked = torch.cat(adversarial)
        if curves and curves[0]:
            losses[str(eps)] = [sum(c) / len(x) for c in zip(*curves, strict=True)]
        results.append({"eps": eps, **scores(attacked)})
    seconds = time.perf_counter() - started
    report = {
        "attack": spec.method,
        "norm": spec.norm,
        "params": {**asdict(spec), "eps": list(spec.eps)},
        "n": len(x),
        "seed": spec.seed,
        "metrics": list(keys),
        "clean": clean,
        "results": results,
        "loss_per_step": losses,
        "images_per_s": len(x) * len(spec.eps) / max(seconds, 1e-9),
    }
    (out / "attacks").mkdir(parents=True, exist_ok=True)
    (out / "attacks" / f"{spec.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if losses and spec.method == "pgd":
        curves = {float(e): v for e, v in losses.items()}
        plot_attack_loss(curves, out / "plots" / f"attack_loss_{spec.name}.png")
    drawn = out / "plots" / f"adversarial_{spec.name}.png"
    eps_max = spec.eps[-1] if spec.eps else 0
    with torch.no_grad():
        if isinstance(task, DetectTask):
            found = model.detect(attacked[:8])
            plot_detections(attacked[:8], found, task.classes, drawn, truth=y[:8])
        else:
            pred = model(attacked[:1])[0].argmax(dim=0)
            plot_segmentation(attacked[0], pred, task.classes, drawn)
    report["drawn"] = f"{drawn} (eps {eps_max:g})"
    return report
