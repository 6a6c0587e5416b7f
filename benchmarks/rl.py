"""Reinforcement-learning benchmarks: the presets, trained from scratch, scored by greedy
evaluation on 20 fixed episodes. Prints one JSON object per run and one per benchmark.

    python benchmarks/rl.py                                  # everything but Pong
    python benchmarks/rl.py --only ppo_cartpole --seeds 0,1,2
    python benchmarks/rl.py --only pong --pong-minutes 30    # Pong's learning curve
    python benchmarks/rl.py --only pong_ppo --seeds 0 --out runs/bench  # PPO on Pong (2 hours;
                                                             # run again to resume a stopped one)

Benchmarks (targets from issue 7):
  ppo_cartpole  cartpole_ppo: greedy mean return >= 475 over 20 episodes within 100k env
                steps and 3 minutes of wall time, for every seed
  dqn_cartpole  cartpole_dqn: >= 475 within 60k env steps
  ppo_lunar     lunarlander_ppo: >= 200
  sac_pendulum  pendulum_sac (issue 18's SAC on the classic continuous task): >= -200 within
                20k env steps (rl-baselines3-zoo's SAC: -202 ± 61 after 20k, one run on v0)
  pong          pong_pg (Karpathy's Pong from Pixels) for a wall-clock budget: the learning
                curve (mean training-episode return against env steps); no target
  pong_ppo      pong_ppo (issue 26): greedy mean return >= +18 over 10 fixed episodes within
                2 hours of wall time; reports the env steps, frames and seconds at which the
                periodic evaluations first reach -10, 0 and +18, greedy and sampled scores of
                the last and best weights, and where the time went (env, inference, learning)
  pong_speed    pong_ppo's seconds per update (env, inference, learning), fp32 against bf16

Each run's "final" score is its last weights; "best" is the checkpoint that scored highest
in the periodic 10-episode evaluations, re-scored on the 20 episodes. Wall time counts
everything, periodic evaluations included. Run it alone: two jobs on 2 cores distort times.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from vision import machine

from neuralab.rl import atari
from neuralab.rl import config as rl_config
from neuralab.rl.envs import spaces
from neuralab.rl.evaluate import EVAL_SEED, evaluate
from neuralab.rl.run import build, load_agent, new_run_dir, plot_returns, train
from neuralab.runs import autocast_dtype, read_jsonl, set_threads

TARGETS = {  # preset, return target, env-step limit, wall-time limit (s)
    "ppo_cartpole": ("cartpole_ppo", 475.0, 100_000, 180.0),
    "dqn_cartpole": ("cartpole_dqn", 475.0, 60_000, None),
    "ppo_lunar": ("lunarlander_ppo", 200.0, None, None),
    "sac_pendulum": ("pendulum_sac", -200.0, 20_000, None),
}


def emit(result: dict) -> None:
    print(json.dumps({**result, "machine": machine()}), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_target(name: str, seed: int, out: Path, overrides: list[str]) -> dict:
    preset, target, max_steps, max_wall = TARGETS[name]
    cfg = rl_config.load(preset, [*overrides, f"seed={seed}"])
    run_dir = new_run_dir(out / f"{name}-seed{seed}", cfg)
    results = train(cfg, run_dir, progress=False)
    episodes = cfg.train.final_eval_episodes
    best_cfg, best_agent = load_agent(run_dir, "best")
    best = evaluate(best_cfg, best_agent, episodes)["mean_return"]
    final = results["eval/mean_return"]
    within = (max_steps is None or results["env/steps"] <= max_steps) and (
        max_wall is None or results["train/wall_s"] <= max_wall
    )
    return {
        "benchmark": name,
        "seed": seed,
        "final_return": final,
        "final_std": results["eval/std_return"],
        "best_return": best,
        "best_env_steps": results["eval/best_env_steps"],
        "episodes": episodes,
        "env_steps": results["env/steps"],
        "wall_s": results["train/wall_s"],
        "steps_per_s": results["train/steps_per_s"],
        "target": target,
        "final_passes": within and final >= target,
        "best_passes": within and best >= target,
        "overrides": overrides,
        "run_dir": str(run_dir),
    }


def pong(minutes: float, seed: int, out: Path) -> dict:
    """pong_pg for ``minutes`` of wall time (stopped as by Ctrl-C), then its learning curve."""
    cfg = rl_config.load("pong_pg", [f"seed={seed}", "train.total_steps=1000000000"])
    run_dir = new_run_dir(out / f"pong-seed{seed}", cfg)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, minutes * 60)
    started = time.perf_counter()
    try:
        train(cfg, run_dir, progress=False)
    except KeyboardInterrupt:
        pass
    wall = time.perf_counter() - started
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/episode_return" in r]
    returns = [r["train/episode_return"] for r in records]  # each: a batch's mean
    window = max(1, len(returns) // 10)
    curve = [
        {"env_steps": records[i + window - 1]["step"], "mean_return": statistics.mean(chunk)}
        for i in range(0, len(returns) - window + 1, window)
        for chunk in [returns[i : i + window]]
    ]
    plot_returns(run_dir)
    return {
        "benchmark": "pong",
        "seed": seed,
        "minutes": minutes,
        "wall_s": round(wall, 1),
        "episodes": cfg.env.num_envs * len(returns),
        "env_steps": records[-1]["step"] if records else 0,
        "first_updates_return": statistics.mean(returns[:window]) if returns else None,
        "last_updates_return": statistics.mean(returns[-window:]) if returns else None,
        "curve": curve,
        "plot": str(run_dir / "plots" / "returns.png"),
    }


PPO_TIMES = ("time/env_s", "time/inference_s", "time/learn_s")  # logged by every PPO update
PONG_THRESHOLDS = (-10.0, 0.0, 18.0)
PONG_TARGET, PONG_WALL_S = 18.0, 7200.0


def random_play(cfg: rl_config.RLConfig, episodes: int) -> dict:
    """The honest baseline: uniformly random actions on the evaluation's seeds."""
    rng = np.random.default_rng(0)
    n = spaces(cfg.env)[1]
    seeds = [EVAL_SEED + i for i in range(episodes)]
    returns = [
        r.sum() for r in atari.play(cfg.env, lambda obs: rng.integers(0, n, len(obs)), seeds)[0]
    ]
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}


def pong_speed(overrides: list[str], updates: int = 4, repeats: int = 3) -> dict:
    """Where pong_ppo's time goes, fp32 against bf16 side by side: ``updates`` PPO updates per
    precision, alternated ``repeats`` times; medians of seconds per update of stepping the
    emulators, rollout inference and learning, and agent steps per second."""
    rows: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for precision, got in rows.items():
            cfg = rl_config.load("pong_ppo", [*overrides, f"train.precision={precision}"])
            set_threads(cfg.train.threads)
            algo = build(cfg)
            algo.reset(seed=0)
            algo.update(0, 0)  # warm-up
            started = time.perf_counter()
            times = [algo.update(u, 0) for u in range(1, updates + 1)]
            wall = (time.perf_counter() - started) / updates
            algo.envs.close()
            got.append(
                {k: statistics.mean(t[k] for t in times) for k in PPO_TIMES} | {"wall": wall}
            )
    steps = cfg.env.num_envs * cfg.ppo.num_steps
    out = {}
    for precision, got in rows.items():
        median = {k: statistics.median(r[k] for r in got) for k in (*PPO_TIMES, "wall")}
        out[precision] = {
            **{k.split("/")[1]: round(v, 3) for k, v in median.items() if k != "wall"},
            "s_per_update": round(median["wall"], 3),
            "steps_per_s": round(steps / median["wall"], 1),
            "learner_steps_per_s": round(steps / median["time/learn_s"], 1),
        }
    return {
        "benchmark": "pong_speed",
        "steps_per_update": steps,
        "repeats": repeats,
        **out,
        "learner_bf16_speedup": round(out["fp32"]["learn_s"] / out["bf16"]["learn_s"], 2),
        "bf16_speedup": round(out["fp32"]["s_per_update"] / out["bf16"]["s_per_update"], 2),
        "cpu_bf16": {
            "amx": bool(torch.cpu._is_amx_tile_supported()),
            "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        },
    }


def pong_ppo(seed: int, out: Path, overrides: list[str]) -> dict:
    """Train pong_ppo; when its greedy evaluations first crossed each threshold, its scores,
    and the split of its time between stepping the emulators, rollout inference and learning.
    A stopped run of the same seed in ``out`` is resumed (its wall time carries on)."""
    cfg = rl_config.load("pong_ppo", [*overrides, f"seed={seed}"])
    run_dir = out / f"pong_ppo-seed{seed}"
    resume = (run_dir / "checkpoints" / "last").exists()
    if resume:
        cfg = rl_config.load(run_dir)
    else:
        run_dir = new_run_dir(run_dir, cfg)
    results = train(cfg, run_dir, resume=resume, progress=False)
    records = read_jsonl(run_dir / "metrics.jsonl")
    evals = [r for r in records if "eval/mean_return" in r]
    crossed = {}
    for threshold in PONG_THRESHOLDS:
        first = next((r for r in evals if r["eval/mean_return"] >= threshold), None)
        crossed[f"{threshold:+g}"] = first and {
            "env_steps": first["step"],
            "frames": 4 * first["step"],
            "wall_s": round(first["wall_s"], 1),
        }
    split = {k: round(sum(r.get(k, 0.0) for r in records), 1) for k in PPO_TIMES}
    scores = {}
    for which in ("last", "best"):
        which_cfg, agent = load_agent(run_dir, which)
        for policy in ("greedy", "sampled"):
            ev = evaluate(
                which_cfg, agent, cfg.train.final_eval_episodes, sampled=policy == "sampled"
            )
            scores[f"{which}_{policy}"] = {k: ev[k] for k in ("mean_return", "std_return")}
    scores["random_actions"] = random_play(cfg, cfg.train.final_eval_episodes)
    wall = results["train/wall_s"]
    reached = crossed[f"{PONG_TARGET:+g}"]
    return {
        "benchmark": "pong_ppo",
        "seed": seed,
        "env_steps": results["env/steps"],
        "frames": 4 * results["env/steps"],
        "wall_s": wall,
        "steps_per_s": results["train/steps_per_s"],
        "precision": str(autocast_dtype(cfg.train.precision, torch.device("cpu")) or torch.float32),
        "time_split_s": {**split, "evaluation_and_rest": round(wall - sum(split.values()), 1)},
        "learner_steps_per_s": round(results["env/steps"] / max(split["time/learn_s"], 1e-9), 1),
        "crossed": crossed,
        "scores": scores,
        "episodes": cfg.train.final_eval_episodes,
        "target": PONG_TARGET,
        "passes": bool(reached and reached["wall_s"] <= PONG_WALL_S),
        "overrides": overrides,
        "run_dir": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ppo_cartpole,dqn_cartpole,ppo_lunar,sac_pendulum")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pong-minutes", type=float, default=30.0)
    parser.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="key=value", help="config overrides (tuning)"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for name in args.only.split(","):
            if name == "pong":
                log(f"pong: {args.pong_minutes} minutes")
                emit(pong(args.pong_minutes, seeds[0], out))
                continue
            if name == "pong_speed":
                emit(pong_speed(args.set))
                continue
            if name == "pong_ppo":
                for seed in seeds:
                    log(f"pong_ppo seed {seed}")
                    emit(pong_ppo(seed, out, args.set))
                continue
            if name not in TARGETS:
                parser.error(
                    f"unknown benchmark {name!r}; choose from "
                    f"{', '.join([*TARGETS, 'pong', 'pong_ppo', 'pong_speed'])}"
                )
            rows = []
            for seed in seeds:
                log(f"{name} seed {seed}")
                rows.append(run_target(name, seed, out, args.set))
                emit(rows[-1])
            emit(
                {
                    "benchmark": name,
                    "summary": True,
                    "seeds": seeds,
                    "median_final_return": statistics.median(r["final_return"] for r in rows),
                    "median_best_return": statistics.median(r["best_return"] for r in rows),
                    "median_wall_s": statistics.median(r["wall_s"] for r in rows),
                    "median_env_steps": statistics.median(r["env_steps"] for r in rows),
                    "final_passes": sum(r["final_passes"] for r in rows),
                    "best_passes": sum(r["best_passes"] for r in rows),
                }
            )


if __name__ == "__main__":
    main()
