"""Driving on highway-env: its config in ours, the driving metrics, the scripted drivers and
subprocess vector envs."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

pytest.importorskip("highway_env")

from neuralab.errors import UserError  # noqa: E402
from neuralab.rl import config as rl_config  # noqa: E402
from neuralab.rl import driving  # noqa: E402
from neuralab.rl.drivers import (  # noqa: E402
    DISCRETE_BASELINES,
    baselines,
    drive,
    lane_keeper,
    rules_action,
)
from neuralab.rl.driving import summarize  # noqa: E402
from neuralab.rl.envs import make_env, make_vector_env  # noqa: E402
from neuralab.rl.run import env_spaces  # noqa: E402

IDLE, LEFT, RIGHT, FASTER = 1, 0, 2, 3  # highway-fast-v0's meta-actions


def env_of(*overrides: str):
    return make_env(rl_config.load("highway_dqn", list(overrides)).env)


def empty_road(*overrides: str):
    """highway-fast-v0 with no other car, the ego on lane 1 at 25 m/s, 5 s long."""
    return env_of(
        "env.config.vehicles_count=0", "env.config.lanes_count=2", "env.config.duration=5",
        "env.config.initial_lane_id=1", *overrides,
    )  # fmt: skip


def test_env_config_reaches_highway_env_and_round_trips_through_toml() -> None:
    """env.config.KEY=VALUE overrides merge into the preset's [env.config] (JSON values parsed,
    nested keys too), reach highway-env, and the run's config.toml reads back the same."""
    cfg = rl_config.load(
        "highway_dqn",
        ["env.config.lanes_count=2", "env.config.observation.type=OccupancyGrid"],
    )
    assert cfg.env.config == {
        "vehicles_count": 20, "lanes_count": 2, "observation": {"type": "OccupancyGrid"},
    }  # fmt: skip
    env = make_env(cfg.env)
    assert env.unwrapped.config["lanes_count"] == 2
    assert env.unwrapped.config["observation"]["type"] == "OccupancyGrid"
    assert env.observation_space.shape == (int(np.prod(env.unwrapped.observation_space.shape)),)
    assert rl_config.build(tomllib.loads(rl_config.to_toml(cfg))) == cfg


def test_config_mistakes_are_one_line_errors() -> None:
    """A misspelt highway-env key, env.config on a Gymnasium env, an unknown observation type,
    observations the networks cannot take (one per controlled vehicle) and DQN on continuous
    actions: each a UserError naming what to fix."""
    with pytest.raises(
        UserError, match="unknown highway-env config key 'env.config.vehicle_count'"
    ):
        env_of("env.config.vehicle_count=3")
    with pytest.raises(UserError, match="CartPole-v1 is not a highway-env environment"):
        make_env(rl_config.load("cartpole_ppo", ["env.config.duration=3"]).env)
    with pytest.raises(UserError, match="rejects env.config: Unknown observation type"):
        env_of("env.config.observation.type=Radar")
    agents = '{"type": "MultiAgentObservation", "observation_config": {"type": "Kinematics"}}'
    with pytest.raises(UserError, match="Tuple observations; the networks here take one array"):
        env_of(f"env.config.observation={agents}")
    with pytest.raises(UserError, match="continuous actions .*; this algorithm picks discrete"):
        env_spaces(rl_config.load("highway_dqn", ["env.id=parking-v0"]))  # DQN parking


def test_driving_metrics_of_scripted_episodes_match_hand_computation() -> None:
    """On an empty road at 25 m/s: 5 one-second IDLE steps drive exactly 125 m at 25 m/s with
    no lane change; LEFT, then RIGHT are two lane changes (the path barely longer than the
    road's 125 m, the chord of each step); FASTER raises the mean speed."""
    env = empty_road()
    episodes = {}
    scripts = {
        "idle": [IDLE] * 5,
        "weave": [LEFT, IDLE, IDLE, RIGHT, IDLE],
        "faster": [FASTER, IDLE, IDLE, IDLE, IDLE],
    }
    for name, actions in scripts.items():
        env.reset(seed=0)
        for a in actions:
            _, _, terminated, truncated, info = env.step(a)
        assert truncated and not terminated
        episodes[name] = info["driving"]
    assert episodes["idle"] == {
        "crashed": False, "success": None, "speed": 25.0, "distance": 125.0, "lane_changes": 0,
    }  # fmt: skip
    assert episodes["weave"]["lane_changes"] == 2
    assert 124 < episodes["weave"]["distance"] < 125
    assert episodes["faster"]["speed"] > 27
    row = summarize(list(episodes.values()))
    assert row["crash_rate"] == 0 and row["success_rate"] is None
    km = sum(e["distance"] for e in episodes.values()) / 1000
    assert row["lane_changes_per_km"] == pytest.approx(2 / km)
    assert row["mean_speed"] == pytest.approx(np.mean([e["speed"] for e in episodes.values()]))


def test_summarize_rates_by_hand() -> None:
    """Crash and success rates are fractions of episodes; episodes without a goal (None) do not
    count in the success rate."""
    eps = [
        {"crashed": True, "success": False, "speed": 10.0, "distance": 500.0, "lane_changes": 1},
        {"crashed": False, "success": True, "speed": 20.0, "distance": 1500.0, "lane_changes": 3},
        {"crashed": False, "success": None, "speed": 30.0, "distance": 0.0, "lane_changes": 0},
    ]
    assert summarize(eps) == {
        "crash_rate": pytest.approx(1 / 3), "success_rate": 0.5, "mean_speed": 20.0,
        "mean_distance": pytest.approx(2000 / 3), "lane_changes_per_km": 2.0,
    }  # fmt: skip


def _slow_car_ahead(policy, seconds: int = 20) -> dict:
    """One lane, the ego at 25 m/s, a car at a constant 21 m/s 60 m ahead (braking to the
    slowest target speed, 20 m/s, suffices); the episode's driving metrics."""
    from highway_env.vehicle.kinematics import Vehicle

    env = env_of(
        "env.config.lanes_count=1", "env.config.vehicles_count=0",
        f"env.config.duration={seconds}",
    )  # fmt: skip
    env.reset(seed=0)
    u = env.unwrapped
    u.road.vehicles.append(Vehicle(u.road, u.vehicle.position + [60.0, 0.0], 0.0, 21.0))
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(policy(env))
        done = terminated or truncated
    return info["driving"]


def test_rule_based_driver_brakes_where_braking_suffices() -> None:
    """The scene is a crash for a driver that keeps its speed (the contrast), and the rule-based
    driver gets through all 20 seconds without one."""
    assert _slow_car_ahead(lambda env: IDLE)["crashed"]
    safe = _slow_car_ahead(rules_action)
    assert not safe["crashed"] and safe["speed"] < 25


def test_baselines_score_every_driver_on_the_evaluation_seeds() -> None:
    """Each scripted driver gets the eval metrics; always-SLOWER drives at about 20 m/s, and
    a second call on the same seeds gives the same numbers (the random driver included)."""
    cfg = rl_config.load("highway_dqn", ["env.config.duration=4"]).env
    first = baselines(cfg, 2)
    assert list(first) == list(DISCRETE_BASELINES)
    for row in first.values():
        assert {"mean_return", "crash_rate", "mean_speed", "success_rate", "episodes"} <= row.keys()
    assert first["slower"]["mean_speed"] < 22 and first["idle"]["lane_changes_per_km"] == 0
    assert all(row.pop("decision_ms") >= 0 for row in first.values())  # timed, so it varies
    again = baselines(cfg, 2)
    assert all(row.pop("decision_ms") >= 0 for row in again.values()) and again == first
    with pytest.raises(UserError, match="not one of them"):
        baselines(rl_config.load("cartpole_ppo").env, 2)


def test_baselines_in_worker_processes_score_the_same_episodes() -> None:
    """Sharing the episodes among two forked workers changes nothing but the time taken."""
    cfg = rl_config.load("highway_dqn", ["env.config.duration=3"]).env
    alone, shared = (
        baselines(cfg, 3, ["random", "rules"]),
        baselines(cfg, 3, ["random", "rules"], workers=2),
    )
    for row in (*alone.values(), *shared.values()):
        row.pop("decision_ms")
    assert shared == alone
    with pytest.raises(UserError, match="--workers must be positive"):
        baselines(cfg, 3, workers=0)


def test_async_vector_env_steps_exactly_like_the_in_process_one() -> None:
    """Two highway envs in subprocesses give the very observations, rewards and episode ends
    of the same two stepped in this process, for the same seeds and actions."""
    outs = {}
    for vector in ("sync", "async"):
        cfg = rl_config.load("highway_dqn", [f"env.vector={vector}", "env.config.duration=6"]).env
        envs = make_vector_env(cfg)
        obs, _ = envs.reset(seed=7)
        steps = [obs]
        rng = np.random.default_rng(0)
        for _ in range(10):
            obs, reward, terminated, truncated, _ = envs.step(rng.integers(0, 5, size=2))
            steps += [obs, reward, terminated, truncated]
        envs.close()
        outs[vector] = steps
    for a, b in zip(outs["sync"], outs["async"], strict=True):
        np.testing.assert_array_equal(a, b)


def _attention_net(vehicles: int, seed: int = 0):
    from neuralab.rl.nets import network

    torch.manual_seed(seed)
    model = rl_config.build({"algo": "dqn", "model": {"kind": "ego_attention", "embed": 16}}).model
    return network((vehicles, 7), 3, model)


def test_ego_attention_ignores_the_order_and_padding_of_the_other_vehicles() -> None:
    """Shuffling the other vehicles' rows gives the same Q-values; so do empty rows (presence 0)
    appended or left with garbage features, and a net built for more rows with the same
    weights. The attention weights sum to 1 and give nothing to the empty rows."""
    g = torch.Generator().manual_seed(1)
    table = torch.randn(4, 5, 7, generator=g)
    table[:, :, 0] = 1.0  # all five present
    net = _attention_net(5)
    out = net(table.flatten(1))
    perm = torch.tensor([0, 3, 1, 4, 2])  # the ego stays first
    torch.testing.assert_close(net(table[:, perm].flatten(1)), out)
    padded = torch.cat([table, torch.randn(4, 3, 7, generator=g)], dim=1)
    padded[:, 5:, 0] = 0.0  # three absent vehicles, features left random
    wide = _attention_net(8, seed=99)
    wide.load_state_dict(net.state_dict())
    torch.testing.assert_close(wide(padded.flatten(1)), out)
    weights = wide.last_attention  # (B, heads, V)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2))
    assert (weights[:, :, 5:] == 0).all()
    changed = table.clone()
    changed[:, 2, 1:] += 1.0  # another vehicle moves: the output moves
    assert not torch.allclose(net(changed.flatten(1)), out)


def test_ego_attention_needs_a_table_of_vehicles() -> None:
    """model.kind=ego_attention on a flat observation (CartPole, or a Lidar ring) is a
    one-line error naming what it takes."""
    from neuralab.rl.nets import network

    model = rl_config.build({"algo": "dqn", "model": {"kind": "ego_attention"}}).model
    with pytest.raises(UserError, match="takes a table of vehicles"):
        network((4,), 2, model)
    with pytest.raises(UserError, match="must divide model.embed"):
        rl_config.build({"algo": "dqn", "model": {"kind": "ego_attention", "heads": 3}})


def test_a_racetrack_lap_is_the_outer_lanes_and_the_lane_keeper_drives_it() -> None:
    """The lap is each segment's longest lane, summed by hand from highway-env's track:
    58 + 39.7 + 10 + 63.2 + 47.5 + 28.3 + 78.5 + 58.6 + 12.3 = 396.1 m. Alone on the track
    for 60 s, the pure-pursuit lane keeper drives more than a lap on the road (success);
    not steering leaves the road at the first bend, far short of a lap (no success)."""
    cfg = rl_config.load("racetrack_sac", ["env.config.other_vehicles=0"]).env
    env = make_env(cfg)
    env.reset(seed=0)
    assert driving.lap_length(env) == pytest.approx(396.1, abs=0.1)
    kept = drive(env, lane_keeper, 0).info["driving"]
    assert kept["success"] and kept["distance"] > 396 and not kept["crashed"]
    still = drive(env, lambda e: np.zeros(1, np.float32), 0).info["driving"]
    assert not still["success"] and still["distance"] < 200
    with pytest.raises(UserError, match="steers racetrack-v0's cars only"):
        lane_keeper(env_of())
