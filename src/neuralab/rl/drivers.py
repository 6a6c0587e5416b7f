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
pursuit. ``planner`` (``rl.planner``) needs no training either: it searches the simulator's
own future at every decision. Each driver's time per decision is reported beside its score.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from neuralab.errors import UserError
from neuralab.rl import driving
from neuralab.rl.agents import agents, vehicle_info
from neuralab.rl.config import EnvConfig
from neuralab.rl.envs import Episode, gym, make_env
from neuralab.rl.evaluate import EVAL_SEED, save_episode_gif, summary
from neuralab.rl.planner import BUDGET, planner

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


def rules_action(env) -> int | np.ndarray:
    """The rule-based driver's meta-action in ``env``'s current state (each controlled
    vehicle's, where several share the driver)."""
    if agents(env) > 1:
        return np.array([_rules(env, v) for v in driving.controlled(env)])
    return _rules(env, env.unwrapped.vehicle)


def _rules(env, v) -> int:
    """The rule-based driver's meta-action for vehicle ``v``."""
    actions, road = driving.action_type(env).actions_indexes, env.unwrapped.road
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
        actions = driving.action_type(env).actions_indexes
        if name not in actions:
            raise UserError(f"{env.spec.id} has no {name} action (its actions: {list(actions)})")
        return np.full(agents(env), actions[name]) if agents(env) > 1 else actions[name]

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
    "planner": planner(),  # OPD with its default budget; baselines(planner_budget=...) sets it
}


DISCRETE_BASELINES = ("random", "idle", "slower", "rules")
CONTINUOUS_BASELINES = ("random", "idle")  # idle: no throttle, no steering
RACETRACK_BASELINES = ("random", "idle", "lane_keeper")


def drive(env, policy: Callable, seed: int, seen: Callable | None = None) -> Episode:
    """One episode of ``policy(env) -> action`` from ``env.reset(seed=seed)``; its last
    info holds ``decision_s``, the policy's mean time per decision. ``seen()`` is called
    after the reset and after every step (to render the episode)."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    rewards, done, info, thinking = [], False, {}, 0.0
    seen = seen or (lambda: None)
    seen()
    while not done:
        start = time.perf_counter()
        action = policy(env)
        thinking += time.perf_counter() - start
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(info["agents_rewards"] if agents(env) > 1 else reward)
        done = terminated or truncated
        seen()
    info = {**info, "decision_s": thinking / len(rewards)}
    return Episode(np.zeros((0,)), np.zeros(0, np.int64), np.asarray(rewards, np.float32), info)


def each_vehicle(episode: Episode) -> list[Episode]:
    """A ``drive``'s episode as one episode per controlled vehicle: its rewards (column j of
    the (T, k) rewards of k vehicles) and its driving metrics."""
    if episode.rewards.ndim == 1:
        return [episode]
    return [
        Episode(episode.obs, episode.actions, rewards, vehicle_info(episode.info, j))
        for j, rewards in enumerate(episode.rewards.T)
    ]


def _driver(name: str, planner_budget: int) -> Callable:
    """Driver ``name``'s policy; the planner's with ``planner_budget``."""
    return planner(planner_budget) if name == "planner" else BASELINES[name]


def driver_gif(
    cfg: EnvConfig, name: str, out: Path, planner_budget: int = BUDGET, seed: int = EVAL_SEED
) -> dict[str, float]:
    """Driver ``name``'s first evaluation episode, rendered as an animated GIF at ``out``;
    returns its return and length."""
    env = make_env(cfg, render_mode="rgb_array")
    policy = _driver(name, planner_budget)
    frames: list = []
    episode = drive(env, policy, seed, lambda: frames.append(env.render()))
    fps = env.metadata.get("render_fps") or 30
    env.close()
    save_episode_gif(frames, fps, out)
    total = float(np.mean([ep.total for ep in each_vehicle(episode)]))  # a vehicle's
    return {"gif": str(out), "gif_return": total, "gif_length": len(episode.rewards)}


def _drive_seeds(cfg: EnvConfig, name: str, planner_budget: int, seeds: list[int]) -> list:
    """Driver ``name``'s episodes from ``seeds``, on an env of its own (one worker's share)."""
    env = make_env(cfg)
    policy = _driver(name, planner_budget)
    try:
        return [ep for seed in seeds for ep in each_vehicle(drive(env, policy, seed))]
    finally:
        env.close()


def baselines(
    cfg: EnvConfig,
    episodes: int,
    names: list[str] | None = None,
    planner_budget: int = BUDGET,
    workers: int = 1,
) -> dict[str, dict[str, float | None]]:
    """Each scripted driver's ``summary`` over ``episodes`` episodes on the evaluation seeds
    (those ``rl eval`` scores a learnt agent on; each controlled vehicle's where several share
    the driver), with its mean ``decision_ms``. ``names``
    defaults to the env's quick drivers (not the planner, whose decisions take ~0.1-1 s).
    ``workers`` > 1 shares the episodes among that many processes."""
    if episodes <= 0:
        raise UserError(f"--episodes must be positive, got {episodes}")
    if workers <= 0:
        raise UserError(f"--workers must be positive, got {workers}")
    if not driving.is_driving_id(cfg.id):
        raise UserError(
            f"scripted drivers drive highway-env's roads; {cfg.id} is not one of them "
            "(e.g. highway-fast-v0, merge-v0, intersection-v0)"
        )
    planner(planner_budget)  # its settings' errors, before any work
    env = make_env(cfg)
    k = agents(env)
    if names is None:  # the rule-based driver and braking are meta-actions
        names = list(DISCRETE_BASELINES)
        if _continuous(env):
            racetrack = driving.is_racetrack(env)
            names = list(RACETRACK_BASELINES if racetrack else CONTINUOUS_BASELINES)
    env.close()
    seeds = [EVAL_SEED + i for i in range(episodes)]
    n = min(workers, episodes)  # contiguous shares, so the episodes come back in seed order
    shares = [seeds[k * episodes // n : (k + 1) * episodes // n] for k in range(n)]
    if len(shares) == 1:
        played = {name: _drive_seeds(cfg, name, planner_budget, seeds) for name in names}
    else:  # forked, as the async training envs are: the workers need no main-module guard
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
            futures = {
                name: [pool.submit(_drive_seeds, cfg, name, planner_budget, s) for s in shares]
                for name in names
            }
            played = {name: [ep for f in fs for ep in f.result()] for name, fs in futures.items()}
    out = {}
    for name, episodes_played in played.items():
        out[name] = summary(episodes_played)
        thinking = [ep.info["decision_s"] for ep in episodes_played]
        out[name]["decision_ms"] = 1000 * float(np.mean(thinking))
        if k > 1:  # the rates are over every vehicle's episode, as in rl eval
            out[name].update(episodes=episodes, vehicles=k)
    return out
