"""Evaluation: a trained agent's greedy policy on fresh envs with their own seeds.

The evaluation envs are never the training envs, and their seeds (1,000,000 + i
for episode i) are fixed, so every checkpoint of every run is scored on the same
episodes. The policy is deterministic: the action of highest probability (or Q); a
policy-gradient agent's can also be sampled (``rl eval --sampled``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuralab.errors import UserError
from neuralab.plots import save_gif
from neuralab.rl import atari, driving
from neuralab.rl.agents import agents
from neuralab.rl.config import RLConfig
from neuralab.rl.envs import Episode, SensorFailure, make_env, play_episodes
from neuralab.rl.nets import as_batch

EVAL_SEED = 1_000_000
MAX_GIF_PIXELS = 320 * 240  # a GIF's frames are scaled down to about this many pixels


def _policy(agent: nn.Module, sampled: bool = False, seed: int = EVAL_SEED):
    """The greedy policy, or (``sampled``) actions drawn from a policy's distribution with a
    generator of their own (so sampling neither reads nor moves the global RNG)."""
    generator = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            if not sampled:
                return agent.greedy(as_batch(obs)).numpy()
            if hasattr(agent, "sample"):  # SAC's squashed Gaussian
                return agent.sample(as_batch(obs), generator).numpy()
            probs = agent.dist(as_batch(obs)).probs
            return torch.multinomial(probs, 1, generator=generator).squeeze(1).numpy()

    return act


def evaluate(
    cfg: RLConfig,
    agent: nn.Module,
    episodes: int,
    sampled: bool = False,
    failed: list[str] | None = None,
) -> dict[str, float | None]:
    """``summary`` of ``episodes`` greedy (or ``sampled``) episodes (mean and std of the
    return, ...), episode i reset with seed ``EVAL_SEED + i``; the ``failed`` sensors of a
    fused observation read zero (``SensorFailure``). With k controlled vehicles the returns and
    rates are over each vehicle's episode, and ``vehicles`` says k."""
    if sampled and not (hasattr(agent, "dist") or hasattr(agent, "sample")):
        raise UserError(f"algo={cfg.algo} has no policy distribution to sample; it acts greedily")
    seeds = [EVAL_SEED + i for i in range(episodes)]
    if cfg.env.preprocess == "atari":
        played = [
            Episode(np.zeros((0,)), np.zeros(0, dtype=np.int64), rewards, {})
            for rewards in atari.play(cfg.env, _policy(agent, sampled), seeds)[0]
        ]
        return summary(played)
    envs = [make_env(cfg.env) for _ in range(episodes)]
    if failed:
        envs = [SensorFailure(env, failed) for env in envs]
    played = play_episodes(envs, _policy(agent, sampled), seeds, record=False)
    k = agents(envs[0])
    for env in envs:
        env.close()
    out = summary(played)
    if k > 1:
        out.update(episodes=episodes, vehicles=k)
    return out


def summary(played: list[Episode]) -> dict[str, float | None]:
    """Return statistics of finished episodes, and a driving env's metrics
    (``driving.summarize``: crash rate, success rate, speed, distance, lane changes)."""
    returns = np.array([ep.total for ep in played])
    out = {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(np.mean([len(ep.rewards) for ep in played])),
        "episodes": len(played),
    }
    if all("driving" in ep.info for ep in played):
        out.update(driving.summarize([ep.info["driving"] for ep in played]))
    return out


def record_gif(
    cfg: RLConfig,
    agent: nn.Module,
    out: Path,
    seed: int = EVAL_SEED,
    max_frames: int = 600,
    failed: list[str] | None = None,
) -> dict[str, float]:
    """One greedy episode (the ``failed`` sensors reading zero) rendered as an animated GIF
    (every k-th frame, at most ``max_frames``, at the env's speed); returns the episode's
    return and length."""
    if cfg.env.preprocess == "atari":  # the 84x84 frames the agent sees, 15 decisions a second
        (rewards,), gray = atari.play(cfg.env, _policy(agent), [seed], frames_of=0)
        frames = [np.repeat(np.kron(f, np.ones((3, 3), f.dtype))[..., None], 3, -1) for f in gray]
        total, fps = float(rewards.sum()), 15
    else:
        frames, total, fps = _rendered_episode(cfg, agent, seed, failed)
    save_episode_gif(frames, fps, out, max_frames)
    return {"gif": str(out), "gif_return": total, "gif_length": len(frames) - 1}


def save_episode_gif(frames: list, fps: float, out: Path, max_frames: int = 600) -> None:
    """An episode's rendered frames as an animated GIF at the env's speed: every k-th frame
    (at most ``max_frames``), scaled down to about ``MAX_GIF_PIXELS``."""
    k = -(-len(frames) // max_frames)  # ceil
    images = [Image.fromarray(f) for f in frames[::k]]
    scale = math.sqrt(MAX_GIF_PIXELS / (images[0].width * images[0].height))
    if scale < 1:  # CartPole's 600x400 to 340x226; highway-env's 600x150 road to 554x138
        size = (round(images[0].width * scale), round(images[0].height * scale))
        images = [im.resize(size) for im in images]
    save_gif([np.asarray(im) for im in images], out, round(1000 * k / fps))


def _rendered_episode(
    cfg: RLConfig, agent: nn.Module, seed: int, failed: list[str] | None
) -> tuple[list, float, int]:
    """(the env's rendered frames, return, frames per second) of one greedy episode."""
    env = make_env(cfg.env, render_mode="rgb_array")
    if failed:
        env = SensorFailure(env, failed)
    obs, _ = env.reset(seed=seed)
    frames, total, done = [env.render()], 0.0, False
    act, k = _policy(agent), agents(env)
    while not done:
        action = act(obs.reshape(k, -1))  # each vehicle's, for k that share the policy
        obs, reward, terminated, truncated, _ = env.step(action if k > 1 else action[0])
        frames.append(env.render())
        total += float(reward)
        done = terminated or truncated
    fps = env.metadata.get("render_fps") or 30
    env.close()
    return frames, total, fps
