"""Scripted drivers: the baselines every learnt driving policy is printed beside.

``random`` (uniform actions), ``idle`` (always keep lane and speed), ``slower`` (always
brake: safe and slow) and ``rules``, a rule-based driver that reads the simulator's state:
keep the lane; behind a slower car (within ``FOLLOW`` seconds) move to a neighbouring lane
that is free ahead and behind and has more room; when the time to collision with the car
ahead falls under ``BRAKE_TTC`` seconds (or the gap under ``HEADWAY`` seconds of driving)
and no lane is free, brake (and, already at the slowest target speed and under
``EMERGENCY_TTC``, accept a lane with half, then a fifth, of the margins); speed up while
the road ahead is clear.

They act on highway-env's meta-actions by name (LANE_LEFT, IDLE, LANE_RIGHT, FASTER,
SLOWER), so they drive any env with that action type, and they are scored exactly like a
learnt agent: the same evaluation seeds, the same ``summary``. On an env with continuous
actions (parking, racetrack) ``random`` draws uniformly from the box and ``idle`` neither
steers nor accelerates; on the racetrack ``lane_keeper`` follows its lane's centre by pure
pursuit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from neuralab.errors import UserError
from neuralab.rl import driving
from neuralab.rl.config import EnvConfig
from neuralab.rl.envs import Episode, gym, make_env
from neuralab.rl.evaluate import EVAL_SEED, summary

BRAKE_TTC = 4.0  # s: brake (or leave the lane) when the car ahead is closer in time than this
HEADWAY = 1.0  # s: ... or closer in distance than this many seconds of driving
CLEAR_TTC = 8.0  # s: speed up only when nothing ahead is closer than this
EMERGENCY_TTC = 2.5  # s: at the slowest target speed, leave the lane more boldly
FOLLOW = 3.0  # s: a slower car this near ahead is worth overtaking
SIDE_GAP = 1.5  # s of driving: a neighbouring lane is free when no car is this near
LOOKAHEAD = 8.0  # m: how far ahead on its lane the racetrack's lane keeper aims


def _gap_and_ttc(v, other) -> tuple[float, float]:
    """Bumper-to-bumper gap (m) from ``v`` to ``other`` ahead, and the time to close it (s)."""
    if other is None:
        return float("inf"), float("inf")
    gap = v.lane_distance_to(other) - (v.LENGTH + other.LENGTH) / 2
    closing = v.speed - other.speed
    return gap, gap / closing if closing > 0 else float("inf")


def _lane_is_free(road, v, lane_index, scale: float = 1.0) -> bool:
    """No car within ``SIDE_GAP`` seconds ahead of ``v`` or behind it in ``lane_index``, and
    the one behind not closing in on it within ``BRAKE_TTC`` seconds (times ``scale``)."""
    front, rear = road.neighbour_vehicles(v, lane_index)
    margin = scale * SIDE_GAP * max(v.speed, 1.0)
    gap, ttc = _gap_and_ttc(v, front)
    if gap < margin or ttc < scale * BRAKE_TTC:
        return False
    if rear is not None:
        back_gap, back_ttc = _gap_and_ttc(rear, v)
        if back_gap < margin or back_ttc < scale * BRAKE_TTC:
            return False
    return True


def rules_action(env) -> int:
    """The rule-based driver's meta-action in ``env``'s current state."""
    u = env.unwrapped
    actions = u.action_type.actions_indexes
    v, road = u.vehicle, u.road
    front = road.neighbour_vehicles(v, v.lane_index)[0]
    gap, ttc = _gap_and_ttc(v, front)
    danger = ttc < BRAKE_TTC or gap < HEADWAY * v.speed
    blocked = front is not None and gap < FOLLOW * v.speed and front.speed < v.speed + 1
    # braking cannot avoid a car ahead that is slower than the slowest target speed
    trapped = ttc < EMERGENCY_TTC and v.target_speed <= min(v.target_speeds) + 0.5
    for scale in (1.0, 0.5, 0.2) if trapped else (1.0,) if danger or blocked else ():
        for lane in road.network.side_lanes(v.lane_index):  # to a free lane with more room
            name = "LANE_LEFT" if lane[2] < v.lane_index[2] else "LANE_RIGHT"
            room = _gap_and_ttc(v, road.neighbour_vehicles(v, lane)[0])[0]
            if name in actions and room > gap and _lane_is_free(road, v, lane, scale):
                return actions[name]
    if danger:
        return actions["SLOWER"]
    if ttc > CLEAR_TTC and gap > 2 * HEADWAY * v.speed:
        return actions["FASTER"]
    return actions["IDLE"]


def _constant(name: str) -> Callable:
    def act(env) -> int | np.ndarray:
        if _continuous(env):
            if name != "IDLE":
                raise UserError(f"{env.spec.id} acts continuously; it has no {name} meta-action")
            space = env.action_space  # no throttle, no steering
            return np.zeros(space.shape, space.dtype)
        actions = env.unwrapped.action_type.actions_indexes
        if name not in actions:
            raise UserError(f"{env.spec.id} has no {name} action (its actions: {list(actions)})")
        return actions[name]

    return act


def _random(env) -> int | np.ndarray:
    return env.action_space.sample()


def lane_keeper(env) -> np.ndarray:
    """The racetrack's scripted driver: pure pursuit (Coulter 1992) of the point ``LOOKAHEAD``
    m ahead on the centre of the car's lane, as a steering action in [-1, 1]. It reads the
    simulator, ignores the other car, and leaves the speed to the simulator."""
    u = env.unwrapped
    if not (_continuous(env) and env.action_space.shape == (1,) and driving.is_racetrack(env)):
        raise UserError(f"{env.spec.id}: the lane keeper steers racetrack-v0's cars only")
    v = u.vehicle
    lane = u.road.network.get_lane(v.lane_index)
    s, _ = lane.local_coordinates(v.position)
    dx, dy = lane.position(s + LOOKAHEAD, 0) - v.position
    alpha = np.arctan2(dy, dx) - v.heading  # the target's bearing from the car's heading
    steering = np.arctan2(2 * v.LENGTH * np.sin(alpha), LOOKAHEAD)
    low, high = u.action_type.steering_range
    return np.array([np.clip(2 * (steering - low) / (high - low) - 1, -1, 1)], np.float32)


def _continuous(env) -> bool:
    return isinstance(env.action_space, gym.spaces.Box)


BASELINES: dict[str, Callable] = {
    "random": _random,
    "idle": _constant("IDLE"),
    "slower": _constant("SLOWER"),
    "rules": rules_action,
    "lane_keeper": lane_keeper,
}


DISCRETE_BASELINES = ("random", "idle", "slower", "rules")
CONTINUOUS_BASELINES = ("random", "idle")  # idle: no throttle, no steering
RACETRACK_BASELINES = ("random", "idle", "lane_keeper")


def drive(env, policy: Callable, seed: int) -> Episode:
    """One episode of ``policy(env) -> action`` from ``env.reset(seed=seed)``."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    rewards, done, info = [], False, {}
    while not done:
        _, reward, terminated, truncated, info = env.step(policy(env))
        rewards.append(reward)
        done = terminated or truncated
    return Episode(np.zeros((0,)), np.zeros(0, np.int64), np.asarray(rewards, np.float32), info)


def baselines(
    cfg: EnvConfig, episodes: int, names: list[str] | None = None
) -> dict[str, dict[str, float | None]]:
    """Each scripted driver's ``summary`` over ``episodes`` episodes on the evaluation seeds
    (those ``rl eval`` scores a learnt agent on)."""
    if episodes <= 0:
        raise UserError(f"--episodes must be positive, got {episodes}")
    if not driving.is_driving_id(cfg.id):
        raise UserError(
            f"scripted drivers drive highway-env's roads; {cfg.id} is not one of them "
            "(e.g. highway-fast-v0, merge-v0, intersection-v0)"
        )
    env = make_env(cfg)
    if names is None:  # the rule-based driver and braking are meta-actions
        names = list(DISCRETE_BASELINES)
        if _continuous(env):
            racetrack = driving.is_racetrack(env)
            names = list(RACETRACK_BASELINES if racetrack else CONTINUOUS_BASELINES)
    out = {}
    for name in names:
        policy = BASELINES[name]
        out[name] = summary([drive(env, policy, EVAL_SEED + i) for i in range(episodes)])
    env.close()
    return out
