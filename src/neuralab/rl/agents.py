"""Several controlled vehicles sharing one policy (highway-env's ``controlled_vehicles``).

highway-env drives k > 1 vehicles (``env.config.controlled_vehicles``; two by default on
intersection-multi-agent-v0) with a ``MultiAgentAction`` (a tuple of k actions) and a
``MultiAgentObservation`` (a tuple of k observations, each from its own vehicle's seat, that
vehicle first). Parameter sharing, the plain way to train them (Gupta et al. 2017,
"Cooperative Multi-agent Control Using Deep Reinforcement Learning"): every vehicle is one
more stream of experience for the same network, which acts for each from its own view.

``SharedPolicy`` makes one such env an array env: observations (k, D), k actions in, each
vehicle's reward in ``info["agents_rewards"]``. ``AgentStreams`` turns N of them in a vector
env into N * k streams, so DQN and PPO train on them unchanged: stream n * k + j is vehicle j
of env n, with its own reward, return and end. The episode ends for every vehicle together
(highway-env ends it when one crashes, or when all have arrived); a vehicle's end is
``terminated`` where highway-env calls that vehicle terminal (it crashed or arrived) and
``truncated`` (bootstrapped) where the episode ended for it because of the other vehicle or
the time limit.
"""

from __future__ import annotations

import numpy as np

from neuralab.errors import UserError

try:
    import gymnasium as gym
except ImportError:
    raise UserError("reinforcement learning needs Gymnasium: pip install 'neuralab[rl]'") from None


def agents(env: gym.Env) -> int:
    """How many vehicles share the policy in ``env`` (1 for every ordinary env); read through
    any wrappers put on top of ``SharedPolicy`` (Gymnasium's wrappers do not forward it)."""
    try:
        return env.get_wrapper_attr("agents")
    except AttributeError:
        return 1


def vehicle_info(info: dict, j: int) -> dict:
    """Vehicle ``j``'s view of an episode's last info: its driving metrics as ``driving``."""
    if "agents_driving" not in info:
        return info
    return {**info, "driving": info["agents_driving"][j]}


class SharedPolicy(gym.Wrapper):
    """A multi-agent highway-env env as one array env: each vehicle's observation flattened,
    stacked to (k, D); ``step`` takes k discrete actions; the reward is highway-env's (the
    vehicles' mean), each vehicle's own in ``info["agents_rewards"]`` (k floats) and whether
    highway-env calls it terminal in ``info["agents_terminated"]`` (k bools)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        spaces = env.observation_space
        self.agents = len(spaces)
        if self.agents < 2:
            raise UserError("a shared policy needs at least two controlled vehicles")
        if not hasattr(env.unwrapped, "_agent_reward"):
            raise UserError(
                f"{env.spec.id} rewards only its first vehicle; highway-env rewards each of "
                "several controlled vehicles on intersection-v0"
            )
        actions = env.action_space
        if not all(isinstance(space, gym.spaces.Discrete) for space in actions):
            raise UserError(
                f"{env.spec.id}: several controlled vehicles share a policy over discrete "
                f"meta-actions (algo=dqn or ppo); its vehicles act in {actions[0]}"
            )
        self.agent_space = spaces[0]
        flat = gym.spaces.flatten_space(self.agent_space)
        self.observation_space = gym.spaces.Box(
            np.repeat(flat.low[None], self.agents, 0),
            np.repeat(flat.high[None], self.agents, 0),
            dtype=np.float32,
        )
        self.action_space = gym.spaces.MultiDiscrete([actions[0].n] * self.agents)

    def _stack(self, obs: tuple) -> np.ndarray:
        return np.stack([gym.spaces.flatten(self.agent_space, o) for o in obs]).astype(np.float32)

    def _info(self, info: dict) -> dict:
        info = dict(info)
        info["agents_rewards"] = np.asarray(info["agents_rewards"], dtype=np.float64)
        info["agents_terminated"] = np.asarray(info["agents_terminated"], dtype=bool)
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._stack(obs), self._info(info)

    def step(self, action):
        action = tuple(int(a) for a in np.asarray(action).reshape(self.agents))
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._stack(obs), reward, terminated, truncated, self._info(info)


class AgentStreams(gym.vector.VectorWrapper):
    """N ``SharedPolicy`` envs of k vehicles as a vector env of N * k streams (vehicle j of env
    n is stream n * k + j): its observations, actions, rewards, ends and ``final_obs`` are the
    vehicles', and ``infos["episode"]`` / ``infos["_episode"]`` hold each finished vehicle's
    return and length (as ``RecordEpisodeStatistics`` does for one vehicle)."""

    def __init__(self, envs: gym.vector.VectorEnv) -> None:
        super().__init__(envs)
        self.agents, self.envs_count = len(envs.single_action_space.nvec), envs.num_envs
        one = envs.single_observation_space
        self.single_observation_space = gym.spaces.Box(one.low[0], one.high[0], dtype=one.dtype)
        self.single_action_space = gym.spaces.Discrete(int(envs.single_action_space.nvec[0]))
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    @property
    def num_envs(self) -> int:
        return self.envs_count * self.agents

    def _flat(self, obs: np.ndarray) -> np.ndarray:
        return obs.reshape(self.num_envs, *obs.shape[2:])

    def reset(self, **kwargs):
        obs, infos = self.env.reset(**kwargs)
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        return self._flat(obs), infos

    def step(self, actions):
        n, k = self.envs_count, self.agents
        obs, _, terminated, truncated, infos = self.env.step(np.asarray(actions).reshape(n, k))
        ended = terminated | truncated
        rewards = np.stack(infos["agents_rewards"]).reshape(n, k)
        agent_ends = np.zeros((n, k), dtype=bool)
        final_obs = np.full(self.num_envs, None, dtype=object)
        if ended.any():  # the ended envs were reset: their last step's info is "final_info"
            final = infos["final_info"]
            for i in np.flatnonzero(ended):
                rewards[i] = final["agents_rewards"][i]
                agent_ends[i] = final["agents_terminated"][i]
                final_obs[i * k : (i + 1) * k] = list(infos["final_obs"][i])
        ended = np.repeat(ended, k)
        agent_terminated = agent_ends.reshape(-1) & ended
        rewards = rewards.reshape(-1)
        self.returns += rewards
        self.lengths += 1
        out = {"final_obs": final_obs, "_final_obs": ended}
        if ended.any():
            out["episode"] = {"r": self.returns.copy(), "l": self.lengths.copy()}
            out["_episode"] = ended
            self.returns[ended], self.lengths[ended] = 0.0, 0
        return self._flat(obs), rewards, agent_terminated, ended & ~agent_terminated, out
