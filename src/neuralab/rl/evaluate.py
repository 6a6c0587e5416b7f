"""Evaluation: a trained agent's greedy policy on fresh envs with their own seeds.

The evaluation envs are never the training envs, and their seeds (1,000,000 + i
for episode i) are fixed, so every checkpoint of every run is scored on the same
episodes. The policy is deterministic: the action of highest probability (or Q).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuralab.plots import save_gif
from neuralab.rl import driving
from neuralab.rl.config import RLConfig
from neuralab.rl.envs import Episode, make_env, play_episodes
from neuralab.rl.nets import as_batch

EVAL_SEED = 1_000_000
MAX_GIF_PIXELS = 320 * 240  # a GIF's frames are scaled down to about this many pixels


def _greedy(agent: nn.Module):
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return agent.greedy(as_batch(obs)).numpy()

    return act


def evaluate(cfg: RLConfig, agent: nn.Module, episodes: int) -> dict[str, float | None]:
    """``summary`` of ``episodes`` greedy episodes (mean and std of the return, ...)."""
    envs = [make_env(cfg.env) for _ in range(episodes)]
    played = play_episodes(
        envs, _greedy(agent), [EVAL_SEED + i for i in range(episodes)], record=False
    )
    for env in envs:
        env.close()
    return summary(played)


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
    cfg: RLConfig, agent: nn.Module, out: Path, seed: int = EVAL_SEED, max_frames: int = 600
) -> dict[str, float]:
    """One greedy episode rendered as an animated GIF (every k-th frame, at most
    ``max_frames``, at the env's speed); returns the episode's return and length."""
    env = make_env(cfg.env, render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    frames, total, done = [env.render()], 0.0, False
    act = _greedy(agent)
    while not done:
        obs, reward, terminated, truncated, _ = env.step(act(obs[None])[0])
        frames.append(env.render())
        total += float(reward)
        done = terminated or truncated
    fps = env.metadata.get("render_fps") or 30
    env.close()
    k = -(-len(frames) // max_frames)  # ceil
    images = [Image.fromarray(f) for f in frames[::k]]
    scale = math.sqrt(MAX_GIF_PIXELS / (images[0].width * images[0].height))
    if scale < 1:  # CartPole's 600x400 to 340x226; highway-env's 600x150 road to 554x138
        size = (round(images[0].width * scale), round(images[0].height * scale))
        images = [im.resize(size) for im in images]
    save_gif([np.asarray(im) for im in images], out, round(1000 * k / fps))
    return {"gif": str(out), "gif_return": total, "gif_length": len(frames) - 1}
