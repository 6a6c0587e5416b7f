"""Goal-conditioned environments and hindsight experience replay (HER).

Andrychowicz et al. 2017, "Hindsight Experience Replay": an episode that missed its goal
still shows how to reach the places it did reach. So beside each real transition the
replay buffer also gets ``k`` copies whose goal is replaced by a goal achieved later in the
same episode (the "future" strategy), with the reward and the end of the episode computed
again for that goal. With a sparse or distant goal, as in highway-env's parking lot, these
copies are where most of the learning signal comes from.

A goal-conditioned env observes a dict of ``observation``, ``achieved_goal`` and
``desired_goal`` (Gymnasium-Robotics' convention, which highway-env's ``parking-v0``
follows). ``GoalObservation`` flattens it into one vector in that order, so the networks
read all three (as Stable-Baselines3's ``MultiInputPolicy`` does) and ``GoalSpec`` finds the
goals in it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neuralab.errors import UserError

try:
    import gymnasium as gym
except ImportError:
    raise UserError("reinforcement learning needs Gymnasium: pip install 'neuralab[rl]'") from None

KEYS = ("observation", "achieved_goal", "desired_goal")


def is_goal_space(space) -> bool:
    """Whether ``space`` is a goal-conditioned env's Dict of three flat boxes."""
    return (
        isinstance(space, gym.spaces.Dict)
        and set(space.spaces) == set(KEYS)
        and all(len(space[k].shape) == 1 for k in KEYS)
    )


class GoalObservation(gym.ObservationWrapper):
    """A goal-conditioned env's dict observation as one float32 vector:
    [observation, achieved_goal, desired_goal]; ``goal_dim`` is the length of a goal."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.obs_dim = space["observation"].shape[0]
        self.goal_dim = space["desired_goal"].shape[0]
        n = self.obs_dim + 2 * self.goal_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        return np.concatenate([observation[k] for k in KEYS]).astype(np.float32)


@dataclass(frozen=True)
class GoalSpec:
    """Where the goals are in a ``GoalObservation`` vector, and the env's reward and success
    as functions of (achieved goals (N, G), desired goals (N, G)) -> (N,)."""

    obs_dim: int
    goal_dim: int
    reward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    success: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def achieved(self, x: np.ndarray) -> np.ndarray:
        return x[..., self.obs_dim : self.obs_dim + self.goal_dim]

    def desired(self, x: np.ndarray) -> np.ndarray:
        return x[..., self.obs_dim + self.goal_dim :]

    def with_goal(self, x: np.ndarray, goal: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[..., self.obs_dim + self.goal_dim :] = goal
        return out


def goal_spec(env: gym.Env) -> GoalSpec:
    """The ``GoalSpec`` of a ``GoalObservation`` env whose unwrapped env has
    ``compute_reward(achieved, desired, info)`` (vectorised) and, as highway-env's parking
    lot has, a success threshold ``config["success_goal_reward"]``: success means a goal
    reward above minus that threshold."""
    wrapper, u = env, env.unwrapped
    while not isinstance(wrapper, GoalObservation):
        if not hasattr(wrapper, "env"):
            raise UserError(
                f"{env.spec.id if env.spec else env}: HER needs a goal-conditioned env (a dict "
                "of observation, achieved_goal and desired_goal), e.g. parking-v0"
            )
        wrapper = wrapper.env
    threshold = getattr(u, "config", {}).get("success_goal_reward")
    if threshold is None:
        raise UserError(f"{type(u).__name__} has no success_goal_reward; HER cannot tell success")

    def reward(achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        return np.asarray(u.compute_reward(achieved, desired, {}), dtype=np.float64)

    def success(achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        return reward(achieved, desired) > -threshold

    return GoalSpec(wrapper.obs_dim, wrapper.goal_dim, reward, success)


def relabel(
    spec: GoalSpec,
    obs: np.ndarray,
    rewards: np.ndarray,
    next_obs: np.ndarray,
    terminated: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HER's "future" copies of one episode's T transitions: (index of the original
    transition, obs, rewards, next_obs, terminated), each (T * k, ...).

    Copy i of transition t takes as goal the goal achieved at ``next_obs[j]``, j drawn
    uniformly from t..T-1 (j = t: the step itself reached it). Its reward is the env's
    goal reward for that goal plus what the original reward held beyond its own goal reward
    (a collision penalty); it terminates when that goal is reached, or when the original
    step ended the episode for another reason than reaching its goal (a crash).
    """
    t_len = len(rewards)
    t = np.repeat(np.arange(t_len), k)
    j = t + np.floor(rng.random(len(t)) * (t_len - t)).astype(np.int64)
    goals = spec.achieved(next_obs[j])
    achieved = spec.achieved(next_obs[t])
    old_goals = spec.desired(obs[t])
    extra = rewards[t] - spec.reward(achieved, old_goals)
    new_rewards = spec.reward(achieved, goals) + extra
    ended_otherwise = terminated[t].astype(bool) & ~spec.success(achieved, old_goals)
    new_terminated = spec.success(achieved, goals) | ended_otherwise
    return (
        t,
        spec.with_goal(obs[t], goals),
        new_rewards.astype(np.float32),
        spec.with_goal(next_obs[t], goals),
        new_terminated.astype(np.float32),
    )
