"""``neuralab rl train`` and ``neuralab rl eval``.

Imports of Gymnasium and the algorithms happen inside the commands, so the
rest of the CLI works without the ``rl`` extra; without it these commands say
how to install it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuralab.cli.common import Parser, add_json, add_run_options, add_which, resolve_run

ORDER = 6


def cmd_rl_train(args: argparse.Namespace) -> int:
    from neuralab.rl import config as rl_config
    from neuralab.rl.run import new_run_dir, train

    cfg, run_dir, resume = resolve_run(
        args,
        load=rl_config.load,
        to_toml=rl_config.to_toml,
        create=lambda cfg, name: new_run_dir(args.run_dir, cfg),
        usage="neuralab rl train CONFIG [key=value ...], e.g. cartpole_ppo",
    )
    try:
        results = train(cfg, run_dir, resume=resume, progress=not args.json)
    except KeyboardInterrupt:
        print(
            "neuralab: interrupted; continue from the last checkpoint with: "
            f"neuralab rl train --resume {run_dir}",
            file=sys.stderr,
        )
        return 130
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
    rl_sub = rl_p.add_subparsers(dest="rl_command", required=True, parser_class=Parser)
    p = rl_sub.add_parser("train", help="train an agent (REINFORCE, PPO, DQN) on a Gymnasium env")
    add_run_options(p, "cartpole_ppo, cartpole_dqn, lunarlander_ppo, pong_pg, ...")
    p.set_defaults(func=cmd_rl_train)
    p = rl_sub.add_parser("eval", help="greedy evaluation of a run: mean ± std return, a GIF")
    p.add_argument("run")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--gif", help="write one episode as an animated GIF here")
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_rl_eval)
