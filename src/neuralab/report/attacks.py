"""``neuralab attack RUN``: a robustness report on a trained run's test split.

Writes, into ``<run>/attacks/<name>.json`` and ``<run>/plots/``: clean and robust accuracy
for every eps (and the PNG curve), the mean attack loss per PGD step, and a grid of clean
vs adversarial images with their predicted labels. The report states the attack, its
parameters, the number of test points and the seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuralab.attack.base import Attack
from neuralab.attack.fgsm import FGSM
from neuralab.attack.pgd import PGD
from neuralab.attack.robustness import robustness_curve
from neuralab.errors import UserError


@dataclass(frozen=True)
class AttackSpec:
    """What to run: the parameters a report states."""

    method: str = "pgd"  # fgsm | pgd
    norm: str = "linf"
    eps: tuple[float, ...] = (0.1,)
    alpha: float = 0.01
    steps: int = 20
    restarts: int = 1
    random_start: bool = True
    targeted: bool = False
    target: int | None = None
    n: int = 10000
    seed: int = 0
    batch_size: int = 500
    precision: str = "auto"  # the attack's forward/backward: fp32, bf16, or bf16 where native

    def __post_init__(self) -> None:
        """Every value in range, or a one-line UserError naming the option."""
        for option, value, low in (
            ("--n", self.n, 1),
            ("--steps", self.steps, 1),
            ("--restarts", self.restarts, 1),
            ("--batch-size", self.batch_size, 1),
            ("--seed", self.seed, 0),
        ):
            if value < low:
                raise UserError(f"{option} must be >= {low}, got {value}")
        bad = [e for e in self.eps if not math.isfinite(e) or e < 0]
        if bad or not math.isfinite(self.alpha) or self.alpha <= 0:
            what = f"--eps {bad[0]:g}" if bad else f"--alpha {self.alpha:g}"
            raise UserError(f"{what} is out of range: eps must be >= 0 and alpha > 0, finite")

    @property
    def name(self) -> str:
        return f"{self.method}_{self.norm}" + (f"_target{self.target}" if self.targeted else "")


class _Recording:
    """Calls an attack batch by batch (with the target, if any) and averages its per-step
    losses over all the examples it attacked."""

    def __init__(self, attack: Attack, target: int | None) -> None:
        self.attack, self.target = attack, target
        self.sums: list[float] = []
        self.count = 0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        adv = self.attack(x, y, target=self.target)
        per_restart = getattr(self.attack, "losses", None) or [[]]  # eps 0 runs no step
        for k, value in enumerate(per_restart[-1]):
            if k == len(self.sums):
                self.sums.append(0.0)
            self.sums[k] += value * len(x)
        self.count += len(x)
        return adv

    @property
    def losses(self) -> list[float]:
        return [s / max(self.count, 1) for s in self.sums]


def build_attack(spec: AttackSpec, model: torch.nn.Module, eps: float) -> Attack:
    if spec.method == "fgsm":
        return FGSM(model, eps, norm=spec.norm, targeted=spec.targeted, precision=spec.precision)
    if spec.method == "pgd":
        return PGD(
            model,
            eps,
            spec.alpha,
            spec.steps,
            norm=spec.norm,
            targeted=spec.targeted,
            random_start=spec.random_start,
            restarts=spec.restarts,
            precision=spec.precision,
        )
    raise UserError(f"unknown attack method {spec.method!r}; choose fgsm or pgd")


def attack_run(
    model: torch.nn.Module, x: Tensor, y: Tensor, classes: list[str], spec: AttackSpec, out: Path
) -> dict[str, Any]:
    """Attack the first ``spec.n`` images of a seeded permutation of (x, y); write the report."""
    from neuralab.plots import plot_adversarial_grid, plot_attack_loss, plot_robustness

    if spec.targeted and (spec.target is None or not 0 <= spec.target < len(classes)):
        raise UserError(f"a targeted attack needs --target between 0 and {len(classes) - 1}")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(spec.seed))
    idx = order[: min(spec.n, len(x))]
    x, y = x[idx], y[idx]
    recorders: dict[float, _Recording] = {}

    def make(eps: float) -> _Recording:
        recorders[eps] = _Recording(build_attack(spec, model, eps), spec.target)
        return recorders[eps]

    curve = robustness_curve(
        model, x, y, make, spec.eps, batch_size=spec.batch_size, seed=spec.seed
    )
    report = {"attack": spec.method, "norm": spec.norm, "params": asdict(spec), **curve}
    report["params"]["eps"] = list(spec.eps)
    if spec.method == "pgd":
        report["loss_per_step"] = {str(e): r.losses for e, r in recorders.items()}

    name = spec.name
    (out / "attacks").mkdir(parents=True, exist_ok=True)
    (out / "attacks" / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_robustness(report, out / "plots" / f"robustness_{name}.png")
    if spec.method == "pgd":
        plot_attack_loss(
            {e: r.losses for e, r in recorders.items()}, out / "plots" / f"attack_loss_{name}.png"
        )
    eps_max = max(spec.eps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        xs, ys = x[:8], y[:8]
        adv = build_attack(spec, model, eps_max)(xs, ys, target=spec.target)
    with torch.no_grad():
        clean_pred, adv_pred = model(xs).argmax(1), model(adv).argmax(1)
    plot_adversarial_grid(
        xs,
        adv,
        ys,
        clean_pred,
        adv_pred,
        classes,
        out / "plots" / f"adversarial_{name}.png",
        title=f"{name}, eps {eps_max:g}",
    )
    return report
