"""Reinforcement-learning runs: the run directory, the training loop, exact resume.

A run is a sequence of updates (one rollout or batch of episodes and its
learning each). Every ``train.checkpoint_every`` updates the loop evaluates the
greedy policy, writes a checkpoint and starts a new *segment* by resetting the
envs with seeds derived from (seed, update). Environments' internal states
cannot all be saved (Box2D, the Atari emulator), so resuming happens at segment
starts: the checkpoint holds the weights, optimizer (and replay buffer), every
RNG state and the counters, and the envs are re-seeded exactly as the straight
run re-seeds them. N updates straight == N/2, stop, resume, N/2: bit-identical
parameters.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots
from neuralab.rl import config as rl_config
from neuralab.rl.config import RLConfig
from neuralab.rl.dqn import DQN, QAgent
from neuralab.rl.envs import derived_seed, spaces
from neuralab.rl.evaluate import evaluate, record_gif
from neuralab.rl.nets import network
from neuralab.rl.ppo import PPO, ActorCritic
from neuralab.rl.reinforce import PolicyNet, Reinforce
from neuralab.rl.sac import SAC, SACAgent
from neuralab.runs import Progress, lock_run_dir, make_run_dir, read_jsonl, set_threads
from neuralab.seed import rng_state, seed_everything, set_rng_state
from neuralab.train import checkpoint
from neuralab.train.metrics import MetricsLogger

ALGORITHMS = {"reinforce": Reinforce, "ppo": PPO, "dqn": DQN, "sac": SAC}
AGENTS = {"reinforce": PolicyNet, "ppo": ActorCritic, "dqn": QAgent, "sac": SACAgent}

# a driving env's evaluation metrics logged at every checkpoint and plotted against steps
DRIVING_CURVES = {"crash_rate": "crash rate", "mean_speed": "mean speed (m/s)"}

# the names this record's fields had in checkpoints written before rl/ used runs.Progress
_OLD_NAMES = {"env_steps": "step", "best_return": "best", "best_env_steps": "best_step"}


def new_run_dir(run_dir: str | Path | None, cfg: RLConfig) -> Path:
    """A fresh run directory holding the resolved config; an existing one is never reused, and
    none is made for an environment that cannot be made (``spaces`` makes it once) or that
    the network cannot read (it may need a table of vehicles, or sensors to fuse)."""
    shape, n_actions = env_spaces(cfg)
    if cfg.model.kind in ("ego_attention", "fusion"):  # (before any seeding: a throwaway)
        network(shape, n_actions, cfg.model)
    name = cfg.env.id.split("/")[-1].split("-")[0].lower()
    return make_run_dir(run_dir, f"{name}_{cfg.algo}", rl_config.to_toml(cfg), "neuralab rl train")


def env_spaces(cfg: RLConfig) -> tuple[tuple[int, ...], int]:
    """``envs.spaces`` of the run's env, checked against the kind of actions its algorithm takes."""
    return spaces(cfg.env, continuous=cfg.algo in rl_config.CONTINUOUS)


def build(cfg: RLConfig):
    """The configured algorithm, its networks seeded by ``cfg.seed``."""
    seed_everything(cfg.seed)
    obs_shape, n_actions = env_spaces(cfg)
    return ALGORITHMS[cfg.algo](cfg, obs_shape, n_actions)


def train(
    cfg: RLConfig, run_dir: Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (from ``new_run_dir``, or a stopped run to resume).

    ``runs.Progress`` keeps the run's place: ``step`` counts environment steps, ``update``
    updates, and ``best``/``best_step`` are the best greedy mean return and where it was.
    """
    lock_run_dir(run_dir)  # the one writer of this run directory
    tc = cfg.train
    threads = set_threads(tc.threads)
    algo = build(cfg)
    state = Progress()
    if resume:
        ckpt = checkpoint.read(run_dir, "last")
        state = Progress(**{_OLD_NAMES.get(k, k): v for k, v in ckpt.meta["progress"].items()})
        if state.step >= tc.total_steps:
            raise UserError(f"{run_dir} already took its {tc.total_steps} steps; nothing to resume")
        checkpoint.load_weights(algo.agent, ckpt.model, ckpt.path)
        algo.load_state_dict(ckpt.state["algo"])
        set_rng_state(ckpt.state["rng"])
    ckpt_root = run_dir / "checkpoints"
    logger = MetricsLogger(run_dir, start_step=state.step)
    desc = f"{cfg.env.id}/{cfg.algo}"
    bar = tqdm(
        total=tc.total_steps, initial=state.step, disable=not progress, desc=desc, unit="step"
    )
    started = time.perf_counter() - state.wall_s
    segment_start = True  # a resumed run re-seeds its envs even off a segment boundary
    try:
        while state.step < tc.total_steps:
            if segment_start or state.update % tc.checkpoint_every == 0:
                algo.reset(derived_seed(cfg.seed, state.update))
                segment_start = False
            metrics = algo.update(state.update, state.step)
            steps = metrics.pop("env_steps")
            state.update += 1
            state.step += steps
            record = {"step": state.step, "update": state.update, **metrics}
            at_end = state.step >= tc.total_steps
            if state.update % tc.checkpoint_every == 0 or at_end:
                best = False
                if tc.eval_episodes:
                    ev = evaluate(cfg, algo.agent, tc.eval_episodes)
                    keys = ("mean_return", "std_return", *DRIVING_CURVES, "success_rate")
                    record |= {f"eval/{k}": ev[k] for k in keys if ev.get(k) is not None}
                    best = state.best is None or ev["mean_return"] > state.best
                if best:
                    state.best, state.best_step = ev["mean_return"], state.step
                state.wall_s = time.perf_counter() - started
                logger.log({**record, "wall_s": state.wall_s})
                _save(ckpt_root, algo, state, best)
            else:
                logger.log({**record, "wall_s": time.perf_counter() - started})
            bar.update(steps)
            if "train/episode_return" in record:
                bar.set_postfix(ret=f"{record['train/episode_return']:.1f}")
    finally:
        logger.close()
        bar.close()
        for env in algo.envs if isinstance(algo.envs, list) else [algo.envs]:
            env.close()  # (subprocess envs left to the interpreter's exit print tracebacks)
    results = {
        "algo": cfg.algo,
        "env": cfg.env.id,
        "env/steps": state.step,
        "train/updates": state.update,
        "train/wall_s": round(state.wall_s, 2),
        "train/steps_per_s": round(state.step / max(state.wall_s, 1e-9), 1),
        "train/threads": threads,
        "eval/best_mean_return": state.best,
        "eval/best_env_steps": state.best_step,
    }
    if tc.final_eval_episodes:
        ev = evaluate(cfg, algo.agent, tc.final_eval_episodes)
        results.update({f"eval/{k}": v for k, v in ev.items()})
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    plot_returns(run_dir)
    return results


def _save(root: Path, algo, state: Progress, best: bool) -> None:
    path = checkpoint.write(
        root,
        state.update,
        model=algo.agent.state_dict(),
        state={"algo": algo.state_dict(), "rng": rng_state()},
        meta={"progress": asdict(state)},
    )
    checkpoint.point(root, "last", path)
    if best:
        checkpoint.point(root, "best", path)
    checkpoint.prune(root)


def plot_returns(run_dir: Path) -> Path:
    """The learning curve: training episode returns and greedy evaluations against env steps,
    and the evaluations against wall-clock minutes."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    fig, (ax, by_time) = subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    train = [(r["step"], r["train/episode_return"]) for r in records if "train/episode_return" in r]
    if train:
        ax.plot(*zip(*train, strict=True), alpha=0.4, label="training episodes (mean per update)")
        if len(train) >= 20:
            window = len(train) // 10  # a running mean over a tenth of the updates
            returns = np.array([r for _, r in train])
            smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
            steps = [s for s, _ in train[window - 1 :]]
            ax.plot(steps, smooth, color="C0", label=f"running mean of {window} updates")
    evals = [r for r in records if "eval/mean_return" in r]
    for axis, x in ((ax, "step"), (by_time, "wall_s")):
        if not evals:
            continue
        scale = 60 if x == "wall_s" else 1
        xs = [r[x] / scale for r in evals]
        mean = [r["eval/mean_return"] for r in evals]
        std = [r["eval/std_return"] for r in evals]
        axis.plot(xs, mean, "o-", markersize=3, color="C1", label="greedy evaluation (mean ± std)")
        lo = [m - s for m, s in zip(mean, std, strict=True)]
        hi = [m + s for m, s in zip(mean, std, strict=True)]
        axis.fill_between(xs, lo, hi, alpha=0.2, color="C1")
    fig.suptitle(run_dir.name)
    ax.set(xlabel="environment steps", ylabel="episode return")
    if rl_config.load(run_dir / "config.toml").env.preprocess == "atari":
        top = ax.secondary_xaxis("top", functions=(lambda s: 4 * s, lambda f: f / 4))
        top.set_xlabel("Atari frames (4 a step)")
    by_time.set(xlabel="wall-clock minutes", ylabel="greedy evaluation", title="against time")
    for axis in (ax, by_time):
        axis.grid(alpha=0.3)
    ax.legend()
    if evals and "eval/crash_rate" in evals[0]:
        plot_driving(run_dir, evals)
    return save_figure(fig, run_dir / "plots" / "returns.png")


def plot_driving(run_dir: Path, evals: list[dict]) -> Path:
    """A driving run's greedy crash rate and mean speed against environment steps."""
    fig, axes = subplots(1, len(DRIVING_CURVES), figsize=(10, 3.5))
    steps = [r["step"] for r in evals]
    for ax, (key, label) in zip(axes, DRIVING_CURVES.items(), strict=True):
        ax.plot(steps, [r[f"eval/{key}"] for r in evals], "o-", markersize=3)
        ax.set(xlabel="environment steps", ylabel=label, title=f"greedy evaluation: {label}")
        ax.grid(alpha=0.3)
    return save_figure(fig, run_dir / "plots" / "driving.png")


def load_agent(run_dir: str | Path, which: str = "best"):
    """(config, agent in eval mode) of a run; ``best`` falls back to ``last`` without evals."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a run directory (it has no config.toml)")
    cfg = rl_config.load(run_dir / "config.toml")
    if which == "best" and not (run_dir / "checkpoints" / "best").exists():
        which = "last"
    ckpt = checkpoint.read(run_dir, which, with_state=False)
    agent = AGENTS[cfg.algo](*env_spaces(cfg), cfg)
    checkpoint.load_weights(agent, ckpt.model, ckpt.path)
    return cfg, agent.eval()


def eval_run(
    run_dir: str | Path,
    episodes: int,
    gif: Path | None = None,
    which: str = "best",
    sampled: bool = False,
    failed: list[str] | None = None,
) -> dict[str, Any]:
    """Greedy (or ``sampled``) evaluation of a run's checkpoint over ``episodes`` episodes
    (with the ``failed`` sensors reading zero), and a GIF of one greedy episode."""
    if episodes <= 0:
        raise UserError(f"--episodes must be positive, got {episodes}")
    cfg, agent = load_agent(run_dir, which)
    out = {
        "run_dir": str(run_dir),
        "env": cfg.env.id,
        "policy": "sampled" if sampled else "greedy",
        **evaluate(cfg, agent, episodes, sampled=sampled, failed=failed),
    }
    if failed:
        out["failed_sensors"] = list(failed)
    if gif is not None:
        out.update(record_gif(cfg, agent, gif, failed=failed))
    return out
