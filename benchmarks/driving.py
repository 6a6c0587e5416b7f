"""Driving benchmarks on highway-env (issue 18). Prints one JSON object per measurement.

    python benchmarks/driving.py                               # everything below, seed 0
    python benchmarks/driving.py --only highway_dqn --seeds 0,1,2
    python benchmarks/driving.py --only vector

Benchmarks:
  vector        environment steps/s on highway-fast-v0 (random actions): two envs stepped in
                this process against the same two in subprocesses (env.vector = "async");
                target: >= 1.6x. Medians of 3 alternating measurements.
  baselines     the scripted drivers (random, idle, slower, rules) on 100 evaluation episodes
                of highway-fast-v0, merge-v0 and intersection-v0
  highway_dqn   the preset trained from scratch, then 100 greedy evaluation episodes;
  highway_ppo   targets: crash rate <= 3% and mean speed >= 25 m/s within 30 minutes, and
                better than every scripted driver on crash rate and on speed

  parking_sac_her  SAC + HER trained from scratch on parking-v0, then 100 greedy episodes,
                beside the random and idle drivers on the same seeds; target: success >= 90%
                within 100k steps (also: the first periodic evaluation that reached it)
  racetrack_sac SAC on racetrack-v0, the same way, beside random, idle and the lane keeper;
                target: a lap on the road in >= 90% of the episodes
  intersection  intersection_attention_dqn, intersection_mlp_dqn (the same budget on the flat
                table) and intersection_shared_dqn (two cars, one policy), each trained from
                scratch and scored on 100 greedy episodes beside the scripted drivers; targets:
                ego-attention success >= 90%, crashes <= 5%, within 60 minutes, and better
                than the MLP. A finished run of the same config kept in --out is scored again,
                not retrained.
  fusion        highway_fusion_dqn, scored whole and with each sensor failed (reading zero)
                at test time, then the same agent (one encoder, the same budget) on each of
                its sensors alone; target: fused at least as safe as the best single sensor.
                Five trainings: about 1.5 hours on 2 cores at train.total_steps=30000.
  fusion_dropout  highway_fusion_dqn trained with dqn.sensor_dropout (--sensor-dropout, 0.5:
                half the replayed observations lose one sensor), scored whole and with each
                sensor failed, as above: does it degrade more gracefully than the fused agent
                trained on every sensor? About 45 minutes at train.total_steps=30000.
  planner       the tree-search driver (no training) at budgets of 25 and 75 simulated
                steps a decision, beside the rule-based driver, on 100 evaluation episodes of
                highway-fast-v0 and intersection-v0 (normalised rewards): crash rate, speed,
                success and milliseconds per decision (--workers 2 shares the episodes)

Run it alone: two jobs on 2 cores distort times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from vision import machine

from neuralab.rl import config as rl_config
from neuralab.rl.drivers import baselines
from neuralab.rl.envs import make_vector_env, spaces
from neuralab.rl.evaluate import evaluate
from neuralab.rl.run import load_agent, new_run_dir, train
from neuralab.runs import read_jsonl

PRESETS = ("highway_dqn", "highway_ppo")
PLANNER_BUDGETS = (25, 75)
PLANNER_ENVS = {  # env id: its config (the planner needs rewards in [0, 1])
    "highway-fast-v0": {},
    "intersection-v0": {"normalize_reward": True},
}
BASELINE_ENVS = ("highway-fast-v0", "merge-v0", "intersection-v0")
INTERSECTION = ("intersection_attention_dqn", "intersection_mlp_dqn", "intersection_shared_dqn")
EPISODES = 100
MAX_WALL_S = 1800.0
SUCCESS_TARGETS = {  # preset: (success rate, env-step limit)
    "parking_sac_her": (0.9, 100_000),
    "racetrack_sac": (0.9, 100_000),
}


def emit(result: dict) -> None:
    print(json.dumps({**result, "machine": machine()}), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def steps_per_s(vector: str, steps: int = 600) -> float:
    cfg = rl_config.load("highway_dqn", [f"env.vector={vector}", "env.num_envs=2"]).env
    envs = make_vector_env(cfg)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps // 2):
        envs.step(rng.integers(0, 5, size=2))
    rate = steps / (time.perf_counter() - start)
    envs.close()
    return rate


def bench_vector() -> None:
    rates: dict[str, list[float]] = {"sync": [], "async": []}
    for _ in range(3):
        for vector in rates:
            rates[vector].append(steps_per_s(vector))
    sync, asyn = (statistics.median(rates[v]) for v in ("sync", "async"))
    emit({
        "benchmark": "vector", "env": "highway-fast-v0", "sync_steps_per_s": round(sync, 1),
        "async_steps_per_s": round(asyn, 1), "speedup": round(asyn / sync, 2),
        "target": 1.6, "passes": asyn / sync >= 1.6, "runs": rates,
    })  # fmt: skip


def bench_baselines(episodes: int) -> dict[str, dict]:
    table = {}
    for env_id in BASELINE_ENVS:
        cfg = rl_config.build({"algo": "dqn", "env": {"id": env_id}}).env
        start = time.perf_counter()
        table[env_id] = baselines(cfg, episodes)
        emit({
            "benchmark": "baselines", "env": env_id, "episodes": episodes,
            "wall_s": round(time.perf_counter() - start, 1), "drivers": table[env_id],
        })  # fmt: skip
    return table


def bench_preset(preset: str, seed: int, out: Path, overrides: list[str], scripted: dict) -> None:
    cfg = rl_config.load(preset, [*overrides, f"seed={seed}"])
    run_dir = new_run_dir(out / f"{preset}-seed{seed}", cfg)
    log(f"{preset} seed {seed}: training {cfg.train.total_steps} steps in {run_dir}")
    results = train(cfg, run_dir, progress=False)
    crash, speed = results["eval/crash_rate"], results["eval/mean_speed"]
    beats = all(
        crash < row["crash_rate"] or (crash == 0 and row["crash_rate"] == 0)
        for row in scripted.values()
    ) and all(speed > row["mean_speed"] for row in scripted.values())
    emit({
        "benchmark": preset, "seed": seed, "env": cfg.env.id,
        "episodes": results["eval/episodes"], "mean_return": results["eval/mean_return"],
        "crash_rate": crash, "mean_speed": speed,
        "lane_changes_per_km": results["eval/lane_changes_per_km"],
        "env_steps": results["env/steps"], "wall_s": results["train/wall_s"],
        "steps_per_s": results["train/steps_per_s"],
        "target": {"crash_rate": 0.03, "mean_speed": 25.0, "wall_s": MAX_WALL_S},
        "passes": crash <= 0.03 and speed >= 25.0 and results["train/wall_s"] <= MAX_WALL_S,
        "beats_every_scripted_driver": beats, "overrides": overrides, "run_dir": str(run_dir),
    })  # fmt: skip


def bench_success(preset: str, seed: int, out: Path, overrides: list[str], episodes: int) -> None:
    min_success, max_steps = SUCCESS_TARGETS[preset]
    cfg = rl_config.load(preset, [*overrides, f"seed={seed}"])
    scripted = baselines(cfg.env, episodes)
    run_dir = new_run_dir(out / f"{preset}-seed{seed}", cfg)
    log(f"{preset} seed {seed}: training {cfg.train.total_steps} steps in {run_dir}")
    results = train(cfg, run_dir, progress=False)
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval/success_rate" in r]
    first = next((r for r in evals if r["eval/success_rate"] >= min_success), None)
    success = results["eval/success_rate"]
    emit({
        "benchmark": preset, "seed": seed, "episodes": results["eval/episodes"],
        "success_rate": success, "crash_rate": results["eval/crash_rate"],
        "mean_return": results["eval/mean_return"], "mean_length": results["eval/mean_length"],
        "env_steps": results["env/steps"], "wall_s": results["train/wall_s"],
        "steps_per_s": results["train/steps_per_s"],
        "first_eval_at_target": first and {"step": first["step"], "wall_s": first["wall_s"]},
        "evals": [(r["step"], r["eval/success_rate"]) for r in evals],
        "scripted": {k: {m: v[m] for m in ("success_rate", "crash_rate", "mean_return")}
                     for k, v in scripted.items()},
        "target": {"success_rate": min_success, "env_steps": max_steps},
        "passes": success >= min_success and results["env/steps"] <= max_steps,
        "overrides": overrides, "run_dir": str(run_dir),
    })  # fmt: skip


def _trained(preset: str, seed: int, out: Path, overrides: list[str]) -> tuple[dict, Path]:
    """The results of ``preset`` trained with ``seed``: a finished run of the same config in
    ``out`` is reused (its results.json), otherwise it trains there now."""
    cfg = rl_config.load(preset, [*overrides, f"seed={seed}"])
    run_dir = out / f"{preset}-seed{seed}"
    results = run_dir / "results.json"
    if results.is_file() and rl_config.load(run_dir) == cfg:
        log(f"{preset} seed {seed}: reusing the finished run {run_dir}")
        return json.loads(results.read_text()), run_dir
    run_dir = new_run_dir(run_dir, cfg)
    log(f"{preset} seed {seed}: training {cfg.train.total_steps} steps in {run_dir}")
    return train(cfg, run_dir, progress=False), run_dir


def bench_intersection(seed: int, out: Path, overrides: list[str], episodes: int) -> None:
    rows = {}
    for preset in INTERSECTION:
        results, run_dir = _trained(preset, seed, out, overrides)
        cfg = rl_config.load(run_dir)
        scripted = baselines(cfg.env, episodes, ["idle", "rules"])
        rows[preset] = {k: results[f"eval/{k}"] for k in ("success_rate", "crash_rate")}
        emit({
            "benchmark": "intersection", "preset": preset, "seed": seed,
            "episodes": results["eval/episodes"], "vehicles": results.get("eval/vehicles", 1),
            **rows[preset], "mean_return": results["eval/mean_return"],
            "mean_speed": results["eval/mean_speed"], "env_steps": results["env/steps"],
            "wall_s": results["train/wall_s"], "steps_per_s": results["train/steps_per_s"],
            "scripted": {k: {m: v[m] for m in ("success_rate", "crash_rate")}
                         for k, v in scripted.items()},
            "run_dir": str(run_dir),
        })  # fmt: skip
    attention, mlp = rows["intersection_attention_dqn"], rows["intersection_mlp_dqn"]
    emit({
        "benchmark": "intersection", "seed": seed,
        "target": {"success_rate": 0.9, "crash_rate": 0.05, "wall_s": 3600},
        "passes": attention["success_rate"] >= 0.9 and attention["crash_rate"] <= 0.05,
        "attention_beats_mlp": attention["success_rate"] > mlp["success_rate"]
        and attention["crash_rate"] <= mlp["crash_rate"],
    })  # fmt: skip


def bench_fusion(seed: int, out: Path, overrides: list[str], episodes: int) -> None:
    fused = rl_config.load("highway_fusion_dqn", [*overrides, f"seed={seed}"])
    sensors_config = fused.env.config["observation"]["observation_configs"]
    rows = {}
    for sensor in [None, *sensors_config]:  # all sensors, then each alone (its own encoder)
        one = {"type": "TupleObservation", "observation_configs": [sensor]}
        extra = [f"env.config.observation={json.dumps(one)}"]
        cfg = (
            fused
            if sensor is None
            else rl_config.load("highway_fusion_dqn", [*overrides, *extra, f"seed={seed}"])
        )
        name = "fused" if sensor is None else sensor["type"]
        run_dir = new_run_dir(out / f"fusion-{name}-seed{seed}", cfg)
        log(f"fusion, {name}, seed {seed}: training {cfg.train.total_steps} steps in {run_dir}")
        results = train(cfg, run_dir, progress=False)
        rows[name] = {k: results[f"eval/{k}"] for k in ("crash_rate", "mean_speed", "mean_return")}
        emit({
            "benchmark": "fusion", "seed": seed, "sensors": name, **rows[name],
            "env_steps": results["env/steps"], "wall_s": results["train/wall_s"],
            "steps_per_s": results["train/steps_per_s"], "run_dir": str(run_dir),
        })  # fmt: skip
        if sensor is None:  # the fused agent with each sensor failed, before the single ones
            _score_failures(fused, run_dir, seed, episodes, "fused")
    best_single = min(row["crash_rate"] for name, row in rows.items() if name != "fused")
    emit({
        "benchmark": "fusion", "seed": seed, "fused_crash_rate": rows["fused"]["crash_rate"],
        "best_single_crash_rate": best_single,
        "passes": rows["fused"]["crash_rate"] <= best_single,
    })  # fmt: skip


def _score_failures(cfg, run_dir: Path, seed: int, episodes: int, label: str) -> None:
    """The last weights of the fused run in ``run_dir`` with each of its sensors failed."""
    _, agent = load_agent(run_dir, "last")
    for part, _, _ in spaces(cfg.env)[0].parts:
        failed = evaluate(cfg, agent, episodes, failed=[part])
        emit({
            "benchmark": "fusion", "seed": seed, "sensors": label, "failed_sensor": part,
            **{k: failed[k] for k in ("crash_rate", "mean_speed", "mean_return")},
        })  # fmt: skip


def bench_fusion_dropout(
    seed: int, out: Path, overrides: list[str], episodes: int, dropout: float
) -> None:
    cfg = rl_config.load(
        "highway_fusion_dqn", [*overrides, f"dqn.sensor_dropout={dropout}", f"seed={seed}"]
    )
    label = f"fused, sensor dropout {dropout}"
    run_dir = new_run_dir(out / f"fusion-dropout{dropout}-seed{seed}", cfg)
    log(f"fusion, {label}, seed {seed}: training {cfg.train.total_steps} steps in {run_dir}")
    results = train(cfg, run_dir, progress=False)
    emit({
        "benchmark": "fusion", "seed": seed, "sensors": label,
        **{k: results[f"eval/{k}"] for k in ("crash_rate", "mean_speed", "mean_return")},
        "env_steps": results["env/steps"], "wall_s": results["train/wall_s"],
        "steps_per_s": results["train/steps_per_s"], "run_dir": str(run_dir),
    })  # fmt: skip
    _score_failures(cfg, run_dir, seed, episodes, label)


def bench_planner(episodes: int, workers: int) -> None:
    for env_id, config in PLANNER_ENVS.items():
        cfg = rl_config.build({"algo": "dqn", "env": {"id": env_id, "config": config}}).env
        for budget in PLANNER_BUDGETS:
            start = time.perf_counter()
            row = baselines(cfg, episodes, ["planner"], budget, workers)["planner"]
            wall = time.perf_counter() - start
            emit({
                "benchmark": "planner", "env": env_id, "budget": budget, "episodes": episodes,
                "workers": workers, "wall_s": round(wall, 1), **row,
                "highway_target_met": env_id == "highway-fast-v0" and row["crash_rate"] <= 0.03
                and row["mean_speed"] >= 25.0,
            })  # fmt: skip
        emit({"benchmark": "planner", "env": env_id, "driver": "rules",
              **baselines(cfg, episodes, ["rules"], workers=workers)["rules"]})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value for the trained presets")
    parser.add_argument(
        "--only",
        help=f"vector, baselines, {', '.join([*PRESETS, *SUCCESS_TARGETS])}, planner, "
        "intersection, fusion, fusion_dropout",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes for the planner")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sensor-dropout", type=float, default=0.5, help="for fusion_dropout")
    parser.add_argument("--episodes", type=int, default=EPISODES)
    parser.add_argument("--out", help="where to keep the runs (default: a temporary folder)")
    args = parser.parse_args()
    everything = [
        "vector", "baselines", *PRESETS, *SUCCESS_TARGETS, "planner", "intersection", "fusion",
        "fusion_dropout",
    ]  # fmt: skip
    names = [args.only] if args.only else everything
    out = Path(args.out or tempfile.mkdtemp(prefix="neuralab-driving-"))
    overrides = [*args.overrides, f"train.final_eval_episodes={args.episodes}"]
    scripted = None
    for name in names:
        if name == "vector":
            bench_vector()
        elif name == "planner":
            bench_planner(args.episodes, args.workers)
        elif name == "fusion":
            for seed in [int(s) for s in args.seeds.split(",")]:
                bench_fusion(seed, out, overrides, args.episodes)
        elif name == "fusion_dropout":
            for seed in [int(s) for s in args.seeds.split(",")]:
                bench_fusion_dropout(seed, out, overrides, args.episodes, args.sensor_dropout)
        elif name == "intersection":
            for seed in [int(s) for s in args.seeds.split(",")]:
                bench_intersection(seed, out, overrides, args.episodes)
        elif name in SUCCESS_TARGETS:
            for seed in [int(s) for s in args.seeds.split(",")]:
                bench_success(name, seed, out, overrides, args.episodes)
        elif name == "baselines":
            scripted = bench_baselines(args.episodes)["highway-fast-v0"]
        else:
            if scripted is None:
                cfg = rl_config.build({"algo": "dqn", "env": {"id": "highway-fast-v0"}}).env
                scripted = baselines(cfg, args.episodes)
            for seed in [int(s) for s in args.seeds.split(",")]:
                bench_preset(name, seed, out, overrides, scripted)


if __name__ == "__main__":
    main()
