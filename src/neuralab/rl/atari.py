"""Atari from pixels on ALE's own vector environment (``env.preprocess = "atari"``).

``ale_py.vector_env.AtariVectorEnv`` steps ``env.num_envs`` emulators on ``env.threads`` C++
threads and applies the standard preprocessing of Mnih et al. (2015) itself: every action is
repeated 4 frames and the last two are max-pooled, frames are grayscale and resized to 84x84,
the last 4 are stacked (observations are (4, 84, 84) uint8), and each episode starts with up
to 30 no-ops (and FIRE where the game needs it). Sticky actions are off, as in CleanRL's
``ppo_atari`` on the NoFrameskip-v4 games.

Training clips rewards to their sign (Pong's are already +-1) and, with ``env.episodic_life``,
ends an episode at each lost life; evaluation never does either, so its returns are game scores.
Evaluation episodes run in a vector env of their own, one sub-env per episode, each reset with
its fixed seed and scored on its first episode only.
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from neuralab.errors import UserError
from neuralab.rl.config import EnvConfig

try:
    import gymnasium as gym
except ImportError:
    raise UserError("reinforcement learning needs Gymnasium: pip install 'neuralab[rl]'") from None

STACK, SIZE = 4, 84  # frames stacked, pixels a side


def game(env_id: str) -> str:
    """The ROM name of an ALE id: ``ALE/Pong-v5`` -> ``pong``, ``ALE/MsPacman-v5`` ->
    ``ms_pacman``."""
    match = re.fullmatch(r"ALE/([A-Za-z0-9]+)-v\d+", env_id)
    if not match:
        raise UserError(
            f"env.preprocess=atari takes an ALE id such as ALE/Pong-v5 or ALE/Breakout-v5, "
            f"not {env_id!r}"
        )
    return re.sub(r"(?<!^)(?=[A-Z])", "_", match[1]).lower()


def make_vector(cfg: EnvConfig, num_envs: int, training: bool = True) -> gym.vector.VectorEnv:
    """``num_envs`` games of ``cfg.id``, reset on the step that ends an episode (its last
    observation in ``infos["final_obs"]``), with ``RecordEpisodeStatistics``."""
    from ale_py import roms
    from ale_py.vector_env import AtariVectorEnv

    name = game(cfg.id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Rom pongg not supported." said below
        rom = roms.get_rom_path(name)
    if rom is None:
        raise UserError(f"ALE has no ROM {name!r} for {cfg.id} (e.g. ALE/Pong-v5, ALE/Breakout-v5)")
    envs = AtariVectorEnv(
        name,
        num_envs,
        num_threads=cfg.threads,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        repeat_action_probability=0.0,
        stack_num=STACK,
        img_height=SIZE,
        img_width=SIZE,
        reward_clipping=training,
        episodic_life=training and cfg.episodic_life,
        **(
            {"max_num_frames_per_episode": 4 * cfg.max_episode_steps}
            if cfg.max_episode_steps
            else {}
        ),
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def n_actions(cfg: EnvConfig) -> int:
    envs = make_vector(cfg, 1)
    n = int(envs.single_action_space.n)
    envs.close()
    return n


def play(
    cfg: EnvConfig, act, seeds: list[int], frames_of: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One whole episode per seed, all stepped together; ``act`` maps a batch of observations
    (B, 4, 84, 84) to B actions. Returns each episode's rewards and, for the episode of sub-env
    ``frames_of``, its frames as the agent saw them (the newest of each stack)."""
    envs = make_vector(cfg, len(seeds), training=False)
    obs, _ = envs.reset(seed=np.asarray(seeds, dtype=np.int64))
    live = np.ones(len(seeds), dtype=bool)
    rewards: list[list[float]] = [[] for _ in seeds]
    frames = [] if frames_of is None else [obs[frames_of, -1].copy()]
    while live.any():
        obs, reward, terminated, truncated, info = envs.step(np.asarray(act(obs), dtype=np.int64))
        ended = terminated | truncated
        if frames_of is not None and live[frames_of]:
            seen = info["final_obs"] if ended[frames_of] else obs
            frames.append(seen[frames_of, -1].copy())
        for i in np.flatnonzero(live):
            rewards[i].append(float(reward[i]))
        live &= ~ended
    envs.close()
    return [np.asarray(r, dtype=np.float32) for r in rewards], frames
