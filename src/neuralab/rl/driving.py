"""Driving on Farama's highway-env: its environments, and the metrics beyond return.

Return alone lies on these roads: always braking scores nearly as well as a learnt
policy, at a crawl. So every episode of a driving env also reports whether the ego
vehicle crashed, whether it reached its goal (where the env has one), its mean speed,
the distance it drove and its lane changes; ``summarize`` turns episodes into the table
a person reads: crash rate, success rate, mean speed, distance, lane changes per km.

highway-env is imported on first use (``import highway_env`` registers its ids with
Gymnasium); without it a driving id is a one-line error saying how to install it.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from neuralab.errors import UserError

try:
    import gymnasium as gym
except ImportError:
    raise UserError("reinforcement learning needs Gymnasium: pip install 'neuralab[rl]'") from None

INSTALL = "pip install 'neuralab[rl]' (it installs highway-env)"


def register() -> bool:
    """Register highway-env's ids with Gymnasium; False when it is not installed."""
    try:
        importlib.import_module("highway_env")
    except ImportError:
        return False
    return True


def is_driving_id(env_id: str) -> bool:
    """Whether ``env_id`` is one of highway-env's environments (registering them first)."""
    if env_id not in gym.registry:
        register()
    spec = gym.registry.get(env_id)
    return spec is not None and str(spec.entry_point).startswith("highway_env")


def check_config(env_id: str, config: dict[str, Any]) -> None:
    """A one-line error for a key the env's ``default_config`` does not have."""
    valid = _defaults(env_id)
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise UserError(
            f"unknown highway-env config key 'env.config.{unknown[0]}' for {env_id}; "
            f"valid keys: {', '.join(sorted(valid))}"
        )


def shared_config(env_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with more than one ``controlled_vehicles`` made multi-agent: the env's action
    and observation (``config``'s or its defaults) become a ``MultiAgentAction`` and a
    ``MultiAgentObservation`` of them (``rl.agents`` shares one policy among the vehicles)."""
    controlled = controlled_count(env_id, config)
    defaults = _defaults(env_id)
    action = config.get("action", defaults["action"])
    if controlled == 1 or action.get("type") == "MultiAgentAction":
        return config
    observation = config.get("observation", defaults["observation"])
    return {
        **config,
        "action": {"type": "MultiAgentAction", "action_config": action},
        "observation": {"type": "MultiAgentObservation", "observation_config": observation},
    }


def controlled_count(env_id: str, config: dict[str, Any]) -> int:
    """How many vehicles ``env_id`` with ``config`` controls: its ``controlled_vehicles``."""
    controlled = config.get("controlled_vehicles", _defaults(env_id).get("controlled_vehicles", 1))
    if not isinstance(controlled, int) or controlled < 1:
        raise UserError(
            f"env.config.controlled_vehicles must be a whole number >= 1, got {controlled!r}"
        )
    return controlled


def _defaults(env_id: str) -> dict[str, Any]:
    creator = gym.envs.registration.load_env_creator(gym.registry[env_id].entry_point)
    return creator.default_config()


def action_type(env: gym.Env):
    """The action type of a highway-env env's (first) controlled vehicle."""
    action = env.unwrapped.action_type
    return getattr(action, "agents_action_types", [action])[0]


def observation_type(env: gym.Env):
    """The observation type of a highway-env env's (first) controlled vehicle."""
    observation = env.unwrapped.observation_type
    return getattr(observation, "agents_observation_types", [observation])[0]


def as_highway_config(config: Any) -> Any:
    """A deep copy of ``config`` for highway-env, with every ``observation_shape`` a tuple:
    TOML and JSON have only lists, and highway-env's camera prepends its stack to a tuple."""
    if isinstance(config, dict):
        return {
            key: tuple(value)
            if key == "observation_shape" and isinstance(value, list)
            else as_highway_config(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [as_highway_config(value) for value in config]
    return config


def ego(env: gym.Env):
    """The (first) controlled vehicle of a highway-env environment."""
    return env.unwrapped.vehicle


def controlled(env: gym.Env) -> list:
    """Every controlled vehicle of a highway-env environment, the ego vehicle first."""
    return list(env.unwrapped.controlled_vehicles)


def is_racetrack(env: gym.Env) -> bool:
    return type(env.unwrapped).__name__.startswith("Racetrack")


def lap_length(env: gym.Env) -> float:
    """A racetrack's lap in metres: each road segment's longest lane (its outer one on a bend),
    so a car that drove this far has gone round whichever lanes it took."""
    graph = env.unwrapped.road.network.graph
    return float(
        sum(
            max(lane.length for lane in lanes) for ends in graph.values() for lanes in ends.values()
        )
    )


def success(env: gym.Env, info: dict, distance: float, v=None) -> bool | None:
    """Whether vehicle ``v`` (the ego vehicle by default) reached its goal, on envs that have
    one (else None): intersection (it left through its exit), merge (past the end of the
    ramp), parking, racetrack (it drove a lap, ``distance`` >= ``lap_length``, on the road and
    unhurt)."""
    u, v = env.unwrapped, ego(env) if v is None else v
    name = type(u).__name__
    if is_racetrack(env):
        return distance >= lap_length(env) and bool(v.on_road) and not v.crashed
    if "Intersection" in name:  # (also MultiAgentIntersectionEnv)
        return bool(u.has_arrived(v)) and not v.crashed
    if name.startswith("Merge"):
        return bool(v.position[0] > 370) and not v.crashed  # where merge-v0 ends the episode
    if name.startswith("Parking"):
        return bool(info.get("is_success")) and not v.crashed
    return None


class DrivingMetrics(gym.Wrapper):
    """Adds ``info["driving"]`` on the step that ends an episode: ``crashed``, ``success``
    (None without a goal), ``speed`` (mean m/s over the policy's steps), ``distance`` (m the
    ego vehicle moved) and ``lane_changes`` (moves to a neighbouring lane of the same road).
    With several controlled vehicles, ``info["agents_driving"]`` holds each one's instead."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._vehicles = controlled(self.env)
        k = len(self._vehicles)
        self._speeds: list[list[float]] = [[] for _ in range(k)]
        self._distance, self._lane_changes = [0.0] * k, [0] * k
        self._position = [np.array(v.position, dtype=float) for v in self._vehicles]
        self._lane = [v.lane_index for v in self._vehicles]
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        for j, v in enumerate(self._vehicles):
            position = np.array(v.position, dtype=float)
            self._distance[j] += float(np.linalg.norm(position - self._position[j]))
            self._position[j] = position
            self._speeds[j].append(float(v.speed))
            lane = v.lane_index
            if lane != self._lane[j] and lane is not None and self._lane[j] is not None:
                self._lane_changes[j] += lane[:2] == self._lane[j][:2]  # same road, another lane
            self._lane[j] = lane
        if terminated or truncated:
            info = dict(info)
            records = [
                {
                    "crashed": bool(v.crashed),
                    "success": success(self.env, info, self._distance[j], v),
                    "speed": float(np.mean(self._speeds[j])),
                    "distance": self._distance[j],
                    "lane_changes": self._lane_changes[j],
                }
                for j, v in enumerate(self._vehicles)
            ]
            if len(records) == 1:
                info["driving"] = records[0]
            else:
                info["agents_driving"] = records
        return obs, reward, terminated, truncated, info


def summarize(episodes: list[dict[str, Any]]) -> dict[str, float | None]:
    """The driving table's row from episodes' ``info["driving"]``: crash and success rates
    (fractions of episodes), mean speed (m/s, episodes' means averaged), mean distance (m)
    and lane changes per km driven (all episodes' changes over all their kilometres)."""
    if not episodes:
        raise ValueError("no episodes to summarize")
    goals = [e["success"] for e in episodes if e["success"] is not None]
    km = sum(e["distance"] for e in episodes) / 1000
    return {
        "crash_rate": float(np.mean([e["crashed"] for e in episodes])),
        "success_rate": float(np.mean(goals)) if goals else None,
        "mean_speed": float(np.mean([e["speed"] for e in episodes])),
        "mean_distance": float(np.mean([e["distance"] for e in episodes])),
        "lane_changes_per_km": sum(e["lane_changes"] for e in episodes) / km if km else 0.0,
    }
