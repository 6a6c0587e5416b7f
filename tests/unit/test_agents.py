"""Several controlled vehicles sharing one policy: highway-env's multi-agent intersection as one
array env (``SharedPolicy``), N of them as N * k streams (``AgentStreams``), each vehicle's own
episodes in evaluation and in the scripted drivers' tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("highway_env")

from neuralab.errors import UserError  # noqa: E402
from neuralab.rl import config as rl_config  # noqa: E402
from neuralab.rl.agents import AgentStreams, SharedPolicy, agents  # noqa: E402
from neuralab.rl.drivers import baselines, rules_action  # noqa: E402
from neuralab.rl.envs import (  # noqa: E402
    SensorFailure,
    gym,
    make_env,
    make_vector_env,
    play_episodes,
)
from neuralab.rl.run import env_spaces  # noqa: E402

SLOWER, IDLE, FASTER = 0, 1, 2  # intersection-v0's meta-actions (speed only)


def two_cars(*overrides: str):
    return rl_config.load("intersection_shared_dqn", ["env.vector=sync", *overrides])


def test_shared_env_stacks_each_vehicles_own_view_and_acts_for_each() -> None:
    """Row j of the observation is highway-env's own Kinematics view from vehicle j's seat
    (vehicle j first); action j drives vehicle j only (one brakes, the other keeps on); the
    rewards are highway-env's per-vehicle ones, and the env's reward is their mean."""
    cfg = two_cars()
    assert env_spaces(cfg) == ((15, 7), 3)  # each vehicle's table, each vehicle's actions
    env = make_env(cfg.env)
    assert agents(env) == 2 and env.observation_space.shape == (2, 105)
    obs, _ = env.reset(seed=3)
    views = env.unwrapped.observation_type.observe()
    assert np.allclose(obs, np.stack([np.ravel(v) for v in views]))
    cars = env.unwrapped.controlled_vehicles
    before = [car.target_speed for car in cars]
    _, reward, _, _, info = env.step(np.array([IDLE, SLOWER]))
    assert cars[0].target_speed == before[0] and cars[1].target_speed < before[1]
    own = [env.unwrapped._agent_reward(None, car) for car in cars]
    assert np.allclose(info["agents_rewards"], own) and reward == pytest.approx(np.mean(own))
    env.close()


class Pair(gym.Env):
    """Two toy vehicles: vehicle j observes [t, j, a_j], earns t + j (+10 for action 1) a step;
    the episode ends after 3 steps, vehicle 0 terminal there, vehicle 1 not (a time limit)."""

    observation_space = gym.spaces.Tuple([gym.spaces.Box(-99, 99, (3,))] * 2)
    action_space = gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2)

    def _agent_reward(self) -> None:  # as highway-env's envs with per-vehicle rewards
        """(Marks the env as one that rewards each vehicle.)"""

    def reset(self, seed=None, options=None):
        self.t = 0
        return self._obs((0, 0)), self._info((0, 0))

    def _obs(self, actions):
        return tuple(np.array([self.t, j, a], np.float32) for j, a in enumerate(actions))

    def _info(self, actions) -> dict:
        rewards = tuple(float(self.t + j + 10 * a) for j, a in enumerate(actions))
        return {"agents_rewards": rewards, "agents_terminated": (self.t == 3, False)}

    def step(self, action):
        self.t += 1
        info = self._info(action)
        return self._obs(action), 0.0, self.t == 3, False, info


def test_agent_streams_by_hand() -> None:
    """Two toy envs of two vehicles are four streams: each vehicle's reward, its own end
    (terminated for vehicle 0, truncated for vehicle 1 at the same step), its true last
    observation in final_obs, and its return and length in infos["episode"]."""
    mode = gym.vector.AutoresetMode.SAME_STEP
    inner = gym.vector.SyncVectorEnv([lambda: SharedPolicy(Pair())] * 2, autoreset_mode=mode)
    envs = AgentStreams(inner)
    assert envs.num_envs == 4 and envs.single_action_space == gym.spaces.Discrete(2)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (4, 3) and obs[:, 1].tolist() == [0, 1, 0, 1]
    actions = np.array([1, 0, 0, 1])  # env 0: vehicle 0 takes 1; env 1: vehicle 1 takes 1
    for t in (1, 2):
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        assert rewards.tolist() == [t + 10, t + 1, t, t + 11]
        assert not (terminated.any() or truncated.any() or "episode" in infos)
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    assert rewards.tolist() == [13, 4, 3, 14]
    assert terminated.tolist() == [True, False, True, False]
    assert truncated.tolist() == [False, True, False, True]
    assert [o.tolist() for o in infos["final_obs"]] == [[3, 0, 1], [3, 1, 0], [3, 0, 0], [3, 1, 1]]
    assert obs[:, 0].tolist() == [0, 0, 0, 0]  # the next episodes' first observations
    assert infos["_episode"].all() and infos["episode"]["l"].tolist() == [3] * 4
    assert infos["episode"]["r"].tolist() == [36, 9, 6, 39]  # 1+2+3 (+30), 2+3+4 (+30)
    _, rewards, *_ = envs.step(actions)
    assert rewards.tolist() == [11, 2, 1, 12]  # the returns start again


def test_vector_env_of_the_intersection_has_a_stream_per_vehicle() -> None:
    """make_vector_env with two cars per env: 2 envs give 4 streams of (105,) observations."""
    envs = make_vector_env(two_cars().env)
    obs, _ = envs.reset(seed=0)
    assert envs.num_envs == 4 and obs.shape == (4, 105)
    obs, rewards, terminated, truncated, _ = envs.step(np.full(4, IDLE))
    assert obs.shape == (4, 105) and rewards.shape == terminated.shape == (4,)
    envs.close()


def test_each_vehicle_is_scored_on_its_own_episode() -> None:
    """play_episodes gives one episode per vehicle: its own rewards and driving metrics; the
    scripted drivers' table, from its own code path (drive, each_vehicle), agrees with it."""
    cfg = two_cars()
    envs = [make_env(cfg.env) for _ in range(3)]
    played = play_episodes(envs, lambda x: np.full(len(x), IDLE), [1_000_000 + i for i in range(3)])
    assert len(played) == 6
    for env, (first, second) in zip(envs, zip(played[::2], played[1::2], strict=True), strict=True):
        cars = env.unwrapped.controlled_vehicles
        assert first.info["driving"]["crashed"] == cars[0].crashed
        assert second.info["driving"]["crashed"] == cars[1].crashed
        assert len(first.rewards) == len(second.rewards)  # one episode for both
        assert first.obs[0][0] == 1  # each sees itself first: present
    table = baselines(cfg.env, 3, ["idle"])["idle"]
    crashes = np.mean([ep.info["driving"]["crashed"] for ep in played])
    assert table["episodes"] == 3 and table["vehicles"] == 2
    assert table["crash_rate"] == pytest.approx(crashes)
    assert table["mean_return"] == pytest.approx(np.mean([ep.total for ep in played]))


def test_the_rule_based_driver_drives_each_vehicle() -> None:
    """rules_action gives one meta-action per controlled vehicle, each the one it gives for
    that vehicle alone."""
    env = make_env(two_cars().env)
    env.reset(seed=5)
    for _ in range(3):
        action = rules_action(env)
        assert action.shape == (2,) and set(action) <= {SLOWER, IDLE, FASTER}
        env.step(action)
    env.close()


def test_highway_envs_own_multi_agent_intersection_is_two_streams_too() -> None:
    """intersection-multi-agent-v0 (two cars by its defaults) needs no controlled_vehicles; its
    success is counted as intersection-v0's."""
    cfg = rl_config.load("intersection_attention_dqn", ["env.id=intersection-multi-agent-v0"])
    assert agents(make_env(cfg.env)) == 2 and env_spaces(cfg)[1] == 3
    played = play_episodes([make_env(cfg.env)], lambda x: np.full(len(x), IDLE), [0])
    assert len(played) == 2 and all(ep.info["driving"]["success"] is not None for ep in played)


def test_a_failed_sensor_reads_zero_for_every_car() -> None:
    """Two cars with a fused Kinematics + Lidar view: SensorFailure on top of the shared env
    still sees two cars, and zeroes the lidar part of each car's row, not whole rows."""
    fused = {
        "type": "TupleObservation",
        "observation_configs": [{"type": "Kinematics"}, {"type": "LidarObservation"}],
    }
    cfg = two_cars(f"env.config.observation={json.dumps(fused)}")
    env = SensorFailure(make_env(cfg.env), ["lidar"])
    assert agents(env) == 2
    obs, _ = env.reset(seed=0)
    kinematics = 5 * 5  # highway-env's default table: 5 vehicles x 5 features
    assert obs.shape == (2, kinematics + 16 * 2) and not obs[:, kinematics:].any()
    assert obs[:, :kinematics].any(axis=1).all()
    env.close()


def test_shared_policy_mistakes_are_one_line_errors() -> None:
    """Envs that reward only their first vehicle, continuous algorithms, a bad count,
    highway-env's tuple-of-rewards wrapper, the planner."""
    highway = rl_config.load("highway_dqn", ["env.config.controlled_vehicles=2"])
    with pytest.raises(UserError, match="rewards only its first vehicle"):
        make_env(highway.env)
    with pytest.raises(UserError, match="algo=dqn or ppo, not algo=sac"):
        two_cars("algo=sac")
    with pytest.raises(UserError, match="a whole number >= 1"):
        make_env(two_cars("env.config.controlled_vehicles=0").env)
    with pytest.raises(UserError, match="returns a tuple of rewards"):
        make_env(two_cars("env.id=intersection-multi-agent-v1").env)
    with pytest.raises(UserError, match="the planner drives one vehicle"):
        baselines(two_cars("env.config.normalize_reward=true").env, 1, ["planner"])
