"""``neuralab rl train`` and ``neuralab rl eval``.

Imports of Gymnasium and the algorithms happen inside the commands, so the
rest of the CLI works without the ``rl`` extra; without it these commands say
how to install it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neuralab.errors import UserError


def cmd_rl_train(args: argparse.Namespace) -> int:
    from neuralab.rl import config as rl_config
    from neuralab.rl.run import new_run_dir, train

    items = list(args.items)
    if args.resume:
        if items and "=" not in items[0]:
            raise UserError("give either a config file or --resume RUN, not both")
        run_dir = Path(args.resume)
        if not (run_dir / "config.toml").is_file():
            raise UserError(f"{run_dir} is not a run directory (it has no config.toml)")
        cfg = rl_config.load(run_dir / "config.toml", items)
        if items:
            (run_dir / "config.toml").write_text(rl_config.to_toml(cfg))
    else:
        if not items:
            raise UserError(
                "missing config: neuralab rl train CONFIG [key=value ...], e.g. cartpole_ppo"
            )
        cfg = rl_config.load(items[0], items[1:])
        run_dir = new_run_dir(args.run_dir, cfg)
    results = train(cfg, run_dir, resume=bool(args.resume), progress=not args.json)
    if args.json:
        print(json.dumps({**results, "run_dir": str(run_dir)}, indent=2))
    else:
        print(
            f"{cfg.algo} on {cfg.env.id}: {results['env/steps']} env steps in "
            f"{results['train/wall_s']:.0f} s; greedy return "
            f"{results.get('eval/mean_return', float('nan')):.1f} ± "
            f"{results.get('eval/std_return', float('nan')):.1f} "
            f"over {results.get('eval/episodes', 0)} episodes\nrun: {run_dir}"
        )
    return 0


def cmd_rl_eval(args: argparse.Namespace) -> int:
    from neuralab.rl.run import eval_run

    gif = Path(args.gif) if args.gif else None
    result = eval_run(args.run, args.episodes, gif, args.which)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['env']}: return {result['mean_return']:.1f} ± {result['std_return']:.1f} "
            f"over {result['episodes']} greedy episodes (min {result['min_return']:.1f}, "
            f"max {result['max_return']:.1f})"
        )
        if gif is not None:
            print(f"gif: {gif}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``rl`` command group to the CLI's subparsers."""
    rl_p = sub.add_parser("rl", help="reinforcement learning: train and evaluate agents")
    rl_sub = rl_p.add_subparsers(dest="rl_command", required=True, parser_class=type(rl_p))
    p = rl_sub.add_parser("train", help="train an agent (REINFORCE, PPO, DQN) on a Gymnasium env")
    p.add_argument(
        "items",
        nargs="*",
        metavar="CONFIG [key=value ...]",
        help="a TOML file or preset (cartpole_ppo, ...), then overrides such as ppo.gamma=0.98",
    )
    p.add_argument("--run-dir", help="where to write the run (must not exist yet)")
    p.add_argument(
        "--resume", metavar="RUN", help="continue a stopped run from its last checkpoint"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_rl_train)
    p = rl_sub.add_parser("eval", help="greedy evaluation of a run: mean ± std return, a GIF")
    p.add_argument("run")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--gif", help="write one episode as an animated GIF here")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rl_eval)
