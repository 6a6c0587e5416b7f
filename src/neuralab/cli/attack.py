"""``neuralab attack``: robust accuracy of a trained classifier under FGSM or PGD; a
segmenter's mIoU or a detector's mAP under the same attacks on its own loss."""

from __future__ import annotations

import argparse

from neuralab.cli.common import add_json, add_which, comma_list, print_json, table
from neuralab.cli.train import trained_run

ORDER = 3


def cmd_attack(args: argparse.Namespace) -> int:
    from neuralab import data
    from neuralab.report.attacks import AttackSpec, attack_run

    run_dir, cfg, model, spec = trained_run(args, ("image", "segment", "detect"))
    attack = AttackSpec(
        method=args.method,
        norm=args.norm,
        eps=tuple(comma_list(args.eps, "--eps", float, "0.03,0.1")),
        alpha=args.alpha,
        steps=args.steps,
        restarts=args.restarts,
        random_start=not args.no_random_start,
        targeted=args.targeted,
        target=args.target,
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    if spec.kind == "scenes":
        from neuralab.cli._scenes import attack_scenes

        return attack_scenes(args, run_dir, cfg, model, attack)
    x, y = data.load_split(cfg.data, "test")
    report = attack_run(model, x, y, list(spec.classes), attack, run_dir)
    if args.json:
        print_json(
            {
                k: report[k]
                for k in (
                    "attack",
                    "norm",
                    "params",
                    "n",
                    "seed",
                    "clean_acc",
                    "results",
                    "images_per_s",
                )
            }
        )
        return 0
    print(
        f"{attack.name} on {report['n']} test images of {run_dir} ({args.which} checkpoint), "
        f"seed {report['seed']}"
    )
    rows = [["0 (clean)", f"{report['clean_acc']:.4f}"]]
    rows += [[f"{r['eps']:g}", f"{r['robust_acc']:.4f}"] for r in report["results"]]
    print(table(rows, ["eps", "accuracy"]))
    print(f"{report['images_per_s']:.0f} attacked images/s")
    print(f"report: {run_dir / 'attacks' / (attack.name + '.json')}, plots in {run_dir / 'plots'}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attack", help="robust accuracy (mIoU, mAP) under FGSM or PGD, with a report"
    )
    p.add_argument("run", help="a trained run directory")
    p.add_argument("--method", default="pgd", choices=["fgsm", "pgd"], help="default: pgd")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="default: linf")
    p.add_argument("--eps", default="0.1", help="one or more budgets in pixel units: 0.03,0.1")
    p.add_argument("--alpha", type=float, default=0.01, help="PGD step size (default: 0.01)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default: 20)")
    p.add_argument("--restarts", type=int, default=1, help="PGD random restarts (worst case)")
    p.add_argument("--no-random-start", action="store_true", help="PGD starts at the image")
    p.add_argument("--targeted", action="store_true", help="push towards --target")
    p.add_argument("--target", type=int, help="target class index for --targeted")
    p.add_argument("--n", type=int, default=10000, help="test images attacked (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="random starts (default: 0)")
    p.add_argument("--batch-size", type=int, default=500, help="default: 500")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="the model's passes in the attack: auto = bf16 where the CPU or GPU computes in "
        "bf16 (AMX, AVX512-BF16), else fp32 (default: auto)",
    )
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_attack)
