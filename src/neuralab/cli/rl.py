"""``neuralab rl train``, ``neuralab rl eval`` and ``neuralab rl baselines``.

Imports of Gymnasium and the algorithms happen inside the commands, so the
rest of the CLI works without the ``rl`` extra; without it these commands say
how to install it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuralab.cli.common import (
    Parser,
    add_json,
    add_run_options,
    add_which,
    resolve_run,
    table,
)
from neuralab.configfile import merge, parse_overrides, resolve_path
from neuralab.errors import UserError

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
            f"over {results.get('eval/episodes', 0)} episodes{_of_vehicles(results, 'eval/')}"
            f"{_driving_line(results)}"
            f"\nrun: {run_dir}"
        )
    return 0


def _of_vehicles(results: dict, prefix: str = "") -> str:
    """ " of k vehicles" where k controlled vehicles shared the policy (their rates pooled)."""
    k = results.get(f"{prefix}vehicles")
    return f" of {k} vehicles" if k else ""


def _driving_line(results: dict) -> str:
    """A driving run's crash rate and speed, to follow its return."""
    if results.get("eval/crash_rate") is None:
        return ""
    return (
        f"; crash rate {results['eval/crash_rate']:.0%}, "
        f"mean speed {results['eval/mean_speed']:.1f} m/s (rl baselines for the scripted drivers)"
    )


def cmd_rl_eval(args: argparse.Namespace) -> int:
    from neuralab.rl.run import eval_run

    gif = Path(args.gif) if args.gif else None
    failed = args.fail_sensor.split(",") if args.fail_sensor else None
    result = eval_run(args.run, args.episodes, gif, args.which, args.sampled, failed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['env']}: return {result['mean_return']:.1f} ± {result['std_return']:.1f} "
        f"over {result['episodes']} {result['policy']} episodes{_of_vehicles(result)} "
        f"(min {result['min_return']:.1f}, "
        f"max {result['max_return']:.1f})"
    )
    if "crash_rate" in result:
        print(_driving_table({"agent": result}, result["episodes"]))
    if gif is not None:
        print(f"gif: {gif}")
    return 0


DRIVING_COLUMNS = [
    ("return", "mean_return", "{:.1f}"),
    ("± std", "std_return", "{:.1f}"),
    ("crash rate", "crash_rate", "{:.0%}"),
    ("success", "success_rate", "{:.0%}"),
    ("speed m/s", "mean_speed", "{:.1f}"),
    ("distance m", "mean_distance", "{:.0f}"),
    ("lane changes/km", "lane_changes_per_km", "{:.1f}"),
    ("ms/decision", "decision_ms", "{:.1f}"),
]


def _driving_table(rows: dict[str, dict], episodes: int) -> str:
    """Driving metrics, one row per driver, over ``episodes`` fixed-seed episodes (with the
    time per decision where the drivers report it)."""
    timed = any("decision_ms" in r for r in rows.values())
    columns = [c for c in DRIVING_COLUMNS if timed or c[1] != "decision_ms"]
    body = [
        [driver] + ["—" if r[key] is None else fmt.format(r[key]) for _, key, fmt in columns]
        for driver, r in rows.items()
    ]
    header = ["driver"] + [name for name, _, _ in columns]
    of = _of_vehicles(next(iter(rows.values())))
    return f"{table(body, header)}\n({episodes} episodes{of} each, the evaluation seeds of rl eval)"


def cmd_rl_baselines(args: argparse.Namespace) -> int:
    from neuralab.rl import config as rl_config
    from neuralab.rl.drivers import BASELINES, baselines, driver_gif
    from neuralab.rl.planner import BUDGET as PLANNER_BUDGET

    try:
        resolve_path(args.env)
    except UserError:  # not a config file or preset: an env id
        values = {"algo": "ppo", "env": {"id": args.env}}
        cfg = rl_config.build(merge(values, parse_overrides(args.overrides)))
    else:
        cfg = rl_config.load(args.env, args.overrides)
    names = args.drivers.split(",") if args.drivers else None  # the env's own drivers
    unknown = [n for n in names or [] if n not in BASELINES]
    if unknown:
        raise UserError(f"unknown driver {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    if args.gif and len(names or []) != 1:
        raise UserError("--gif shows one driver: name it with --drivers (e.g. --drivers planner)")
    budget = PLANNER_BUDGET if args.budget is None else args.budget
    result = baselines(cfg.env, args.episodes, names, budget, args.workers)
    if args.gif:
        result[names[0]].update(driver_gif(cfg.env, names[0], Path(args.gif), budget))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{cfg.env.id}: scripted drivers")
        print(_driving_table(result, args.episodes))
        if args.gif:
            print(f"gif: {args.gif} (the first of those episodes)")
    return 0


def cmd_rl_attention(args: argparse.Namespace) -> int:
    from neuralab.rl.attention import episode_attention, plot_attention
    from neuralab.rl.run import load_agent

    if args.frames <= 0:
        raise UserError(f"--frames must be positive, got {args.frames}")
    cfg, agent = load_agent(args.run, args.which)
    out = Path(args.out) if args.out else Path(args.run) / "plots" / "attention.png"
    snapshots = episode_attention(cfg, agent, args.frames)
    plot_attention(snapshots, out, f"{cfg.env.id}: where {Path(args.run).name} looks")
    print(f"attention over the other vehicles at steps {[s['step'] for s in snapshots]}: {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``rl`` command group to the CLI's subparsers."""
    rl_p = sub.add_parser("rl", help="reinforcement learning: train and evaluate agents")
    rl_sub = rl_p.add_subparsers(dest="rl_command", required=True, parser_class=Parser)
    p = rl_sub.add_parser("train", help="train an agent (REINFORCE, PPO, DQN) on a Gymnasium env")
    add_run_options(p, "cartpole_ppo, cartpole_dqn, lunarlander_ppo, pong_ppo, pong_pg, ...")
    p.set_defaults(func=cmd_rl_train)
    p = rl_sub.add_parser("eval", help="greedy evaluation of a run: mean ± std return, a GIF")
    p.add_argument("run")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument(
        "--sampled", action="store_true", help="draw actions from the policy instead of greedy"
    )
    p.add_argument("--gif", help="write one episode as an animated GIF here")
    p.add_argument(
        "--fail-sensor",
        metavar="NAMES",
        help="comma-separated sensors of a fused observation that read zero, e.g. lidar,camera",
    )
    add_which(p)
    add_json(p)
    p.set_defaults(func=cmd_rl_eval)
    p = rl_sub.add_parser(
        "baselines",
        help="scripted drivers on a highway-env road: random, idle, slower, rules, planner",
    )
    p.add_argument("env", help="a highway-env id (highway-fast-v0, merge-v0, ...) or an RL preset")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. env.config.vehicles_count=30"
    )
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument(
        "--drivers",
        help="comma-separated, e.g. slower,rules,planner (default: all but the planner)",
    )
    p.add_argument(
        "--budget", type=int, help="the planner's simulated steps per decision (default: 75)"
    )
    p.add_argument("--workers", type=int, default=1, help="processes sharing the episodes")
    p.add_argument("--gif", help="write the driver's first episode as an animated GIF here")
    add_json(p)
    p.set_defaults(func=cmd_rl_baselines)
    p = rl_sub.add_parser(
        "attention", help="an ego-attention policy's attention over the other cars, on the road"
    )
    p.add_argument("run")
    p.add_argument("--frames", type=int, default=4, help="moments of one greedy episode")
    p.add_argument("--out", help="the PNG (default: RUN/plots/attention.png)")
    add_which(p)
    p.set_defaults(func=cmd_rl_attention)
