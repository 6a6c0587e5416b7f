"""Self-supervised learning on Fashion-MNIST: pretraining time, linear-probe and kNN test
accuracy of SimCLR, DAE and MAE encoders (NNCLR's with ``--methods nnclr``), the baselines
beside them, and label efficiency.

Prints one JSON object per result (machine included). Each method pretrains its preset
(``configs/fashion_<method>.toml``) from scratch unless ``--run-<method> RUN`` reuses a run.
Not named ssl.py: run as a script, that would shadow the standard library's ssl module for
every benchmark in this folder.

    python benchmarks/self_supervised.py         # simclr, dae, mae + baselines + 1% labels
    python benchmarks/self_supervised.py --methods simclr --label-seeds 3 --fractions 0.01,0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from neuralab import config, data
from neuralab.models import create_model
from neuralab.probe.label_efficiency import label_efficiency
from neuralab.probe.linear import (
    knn,
    knn_accuracy,
    linear_probe,
    linear_probe_accuracy,
    load_encoder,
    split_features,
)
from neuralab.runs import set_threads
from neuralab.train import fit, new_run_dir


def machine() -> dict:
    return {
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def emit(result: dict) -> None:
    print(json.dumps({**result, "machine": machine()}), flush=True)


def pretrain(method: str, out: Path, overrides: list[str]) -> Path:
    cfg = config.load(f"fashion_{method}", overrides)
    run_dir = new_run_dir(out / f"fashion_{method}-{time.strftime('%Y%m%d-%H%M%S')}", cfg)
    fit(cfg, run_dir, progress=False)
    return run_dir


def raw_pixels(cfg: config.RunConfig) -> None:
    """Logistic regression and kNN on raw pixels, all labels."""
    raw = split_features(None, cfg, 1000)
    everything = torch.arange(len(raw.train[1]))
    emit(
        {
            "result": "raw_pixels",
            "logistic_test_acc": linear_probe_accuracy(raw, everything, 10)["test/acc"],
            "knn_test_acc": knn_accuracy(raw, everything, 10, 20, 0.07),
        }
    )


def random_encoder(encoder: torch.nn.Module, cfg: config.RunConfig) -> None:
    """The floor: ``encoder``'s architecture frozen at a random initialisation, all labels."""
    torch.manual_seed(0)
    random_encoder = create_model(cfg.model.name, **dataclasses.asdict(encoder.config)).eval()
    feats = split_features(random_encoder, cfg, 1000)
    everything = torch.arange(len(feats.train[1]))
    emit(
        {
            "result": "random_encoder",
            "model": cfg.model.name,
            "model_config": dataclasses.asdict(encoder.config),
            "probe_test_acc": linear_probe_accuracy(feats, everything, 10)["test/acc"],
            "knn_test_acc": knn_accuracy(feats, everything, 10, 20, 0.07),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="simclr,dae,mae")
    parser.add_argument("--fractions", default="0.01", help="label-efficiency fractions")
    parser.add_argument("--label-seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/bench_ssl")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override the presets"
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip baselines and label efficiency"
    )
    for method in ("simclr", "nnclr", "dae", "mae"):
        parser.add_argument(f"--run-{method}", help=f"reuse this {method} pretraining run")
    args = parser.parse_args()
    set_threads(0)
    data.locate("fashion-mnist")
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]
    floors: list[dict] = []  # encoder configs whose random-initialisation floor is out
    for i, method in enumerate(methods):
        run_dir = getattr(args, f"run_{method}")
        run_dir = Path(run_dir) if run_dir else pretrain(method, out, args.set)
        summary = json.loads((run_dir / "results.json").read_text())
        probe = linear_probe(run_dir)
        emit(
            {
                "result": "pretrained",
                "method": method,
                "run": str(run_dir),
                "pretrain_wall_s": summary["train/wall_s"],
                "pretrain_steps": summary["train/steps"],
                "best_val_knn_acc": summary.get("val/knn_acc"),
                "probe_test_acc": probe["test/acc"],
                "probe_l2": probe["l2"],
                "knn_test_acc": knn(run_dir)["test/acc"],
            }
        )
        if args.no_baselines:
            continue
        encoder, cfg = load_encoder(run_dir)
        architecture = dataclasses.asdict(encoder.config)
        if architecture not in floors:
            floors.append(architecture)
            random_encoder(encoder, cfg)
        if i == 0:
            raw_pixels(cfg)
            fractions = tuple(float(f) for f in args.fractions.split(","))
            table = label_efficiency(run_dir, fractions, seeds=args.label_seeds, progress=False)
            emit({"result": "label_efficiency", "method": method, **table})


if __name__ == "__main__":
    main()
