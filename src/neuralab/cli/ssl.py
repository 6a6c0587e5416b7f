"""``neuralab pretrain`` (self-supervised pretraining) and the measures of what it learnt:
``linear-probe``, ``knn`` and ``label-efficiency``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from neuralab.cli.common import (
    add_data_dir,
    add_json,
    add_run_options,
    add_which,
    comma_list,
    print_json,
    resolve_run,
    table,
)
from neuralab.cli.train import check_trains_with, report_interrupted
from neuralab.errors import UserError

ORDER = 2


def cmd_pretrain(args: argparse.Namespace) -> int:
    from neuralab import config as config_lib
    from neuralab.plots import plot_curves
    from neuralab.tasks import build_task
    from neuralab.train import distributed, fit, new_run_dir

    if distributed.launched() and int(os.environ["WORLD_SIZE"]) > 1:
        raise UserError("neuralab pretrain runs in one process; start it without torchrun")

    def load(path, overrides):
        cfg = config_lib.load(path, overrides)
        if cfg.ssl.method == "none":
            raise UserError(
                "this config trains with labels; set ssl.method (simclr, nnclr, dae, mae), "
                "e.g. neuralab pretrain fashion_simclr, or use neuralab train"
            )
        return cfg

    def create(cfg, name: str) -> Path:
        check_trains_with(cfg, "neuralab pretrain")
        build_task(cfg).check(cfg)
        return new_run_dir(args.run_dir, cfg, name=name)

    cfg, run_dir, resume = resolve_run(
        args,
        load=load,
        to_toml=config_lib.to_toml,
        create=create,
        usage="neuralab pretrain CONFIG [key=value ...]",
    )
    if not args.json and not resume:  # a resumed run: its user named it
        print(f"run directory: {run_dir}", file=sys.stderr)
    summary = fit(cfg, run_dir, resume=resume, progress=not args.no_progress)
    plot_curves(run_dir)
    if summary["status"] == "interrupted":
        return report_interrupted(summary, run_dir, "neuralab pretrain")
    if args.json:
        print_json({**summary, "run_dir": str(run_dir)})
        return 0
    print(table(build_task(cfg).describe(run_dir, summary, {}), ["pretraining", "value"]))
    print(f"\nrun directory: {run_dir}")
    print(f"  measure it:  neuralab linear-probe {run_dir}  |  neuralab knn {run_dir}")
    return 0


def cmd_linear_probe(args: argparse.Namespace) -> int:
    from neuralab.probe.linear import linear_probe

    result = linear_probe(args.run, labels=args.labels, seed=args.seed, which=args.which)
    if args.json:
        print_json(result)
        return 0
    chosen_on = "val" if "val/acc" in result else "5-fold cross-validation of those images"
    print(
        f"linear probe on frozen features of {args.run} ({args.which} checkpoint): "
        f"test acc {result['test/acc']:.4f} on {result['test/examples']} images "
        f"({result['train/examples']} labelled training images, L2 {result['l2']:g} "
        f"chosen on {chosen_on}: {result.get('val/acc', result.get('cv/acc')):.4f})"
    )
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from neuralab.probe.linear import knn

    result = knn(args.run, k=args.k, temperature=args.temperature, which=args.which)
    if args.json:
        print_json(result)
        return 0
    print(
        f"kNN (k={args.k}, cosine, t={args.temperature:g}) on frozen features of {args.run}: "
        f"test acc {result['test/acc']:.4f} on {result['test/examples']} images"
    )
    return 0


def cmd_label_efficiency(args: argparse.Namespace) -> int:
    from neuralab.probe.label_efficiency import METHODS, label_efficiency

    fractions = tuple(comma_list(args.fractions, "--fractions", float, "0.01,0.1,1.0"))
    result = label_efficiency(
        args.run,
        fractions,
        seeds=args.seeds,
        k=args.k,
        scratch_steps=args.scratch_steps,
        which=args.which,
        progress=not args.json,
    )
    if args.json:
        print_json(result)
        return 0
    cells = result["table"]
    labels = [cells["scratch"][f"{f:g}"]["labels"] for f in fractions]
    header = ["method", *(f"{f:g} ({n} labels)" for f, n in zip(fractions, labels, strict=True))]
    rows = [
        [name, *(f"{100 * c['mean']:.2f} ± {100 * c['std']:.2f}" for c in cells[m].values())]
        for m, name in METHODS.items()
    ]
    print(table(rows, header))
    print(f"test accuracy (%), mean ± std over {args.seeds} seeds; plot: {result['png']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining (no labels are read)")
    add_run_options(p, "fashion_simclr, fashion_nnclr, fashion_dae, fashion_mae")
    add_data_dir(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("linear-probe", help="a linear classifier on a run's frozen features")
    p.add_argument("run")
    p.add_argument("--labels", type=float, default=1.0, help="label fraction: 0.01, 0.1, 1.0")
    p.add_argument("--seed", type=int, default=0, help="which class-balanced label subset")
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_linear_probe)

    p = sub.add_parser("knn", help="k-nearest-neighbour accuracy of a run's frozen features")
    p.add_argument("run")
    p.add_argument("--k", type=int, default=20, help="neighbours (default: 20)")
    p.add_argument("--temperature", type=float, default=0.07, help="votes weighted exp(cos/t)")
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_knn)

    p = sub.add_parser("label-efficiency", help="pretrained vs scratch vs baselines, few labels")
    p.add_argument("run")
    p.add_argument("--fractions", default="0.01,0.1,1.0", help="label fractions, e.g. 0.01,0.1")
    p.add_argument("--seeds", type=int, default=3, help="label subsets (and inits) per fraction")
    p.add_argument("--k", type=int, default=20, help="kNN neighbours")
    p.add_argument("--scratch-steps", type=int, default=1000, help="from-scratch training steps")
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_label_efficiency)
