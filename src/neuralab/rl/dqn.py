"""Deep Q-Networks (Mnih et al. 2015) with the Double-DQN target (van Hasselt et al. 2016).

Each update: act epsilon-greedily for ``train_freq`` steps in every env, storing
transitions in a replay buffer; then take ``gradient_steps`` steps of Huber loss
between Q(s, a) and the target r + gamma * Q_target(s', a*), computed without
gradient by a target network that is a periodic copy of the online one.
Epsilon anneals linearly from ``start_e`` to ``end_e`` over the first
``exploration_fraction`` of the run.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuralab.rl.config import RLConfig
from neuralab.rl.envs import EpisodeStats, make_vector_env
from neuralab.rl.nets import (
    anneal,
    as_batch,
    build_optimizer,
    clip_and_step,
    drop_sensors,
    network,
)


class QAgent(nn.Module):
    """The online Q-network and its target copy (which never gets gradients)."""

    def __init__(self, obs_shape: int | tuple[int, ...], n_actions: int, cfg: RLConfig) -> None:
        super().__init__()
        self.q = network(obs_shape, n_actions, cfg.model)
        self.target = network(obs_shape, n_actions, cfg.model)
        self.sync_target()
        self.target.requires_grad_(False)

    def sync_target(self) -> None:
        self.target.load_state_dict(self.q.state_dict())

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x).argmax(-1)


def td_target(
    agent: QAgent,
    rewards: torch.Tensor,
    next_obs: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    double: bool,
) -> torch.Tensor:
    """r + gamma * (1 - terminated) * Q_target(s', a*), with no gradient.

    a* = argmax_a Q_online(s', a) for Double DQN (the online net picks, the target
    net values, which curbs overestimation), else argmax_a Q_target(s', a).
    """
    with torch.no_grad():
        q_next = agent.target(next_obs)  # (B, A)
        chooser = agent.q(next_obs) if double else q_next
        best = q_next.gather(1, chooser.argmax(-1, keepdim=True)).squeeze(1)  # (B,)
        return rewards + gamma * (1.0 - terminated) * best


class ReplayBuffer:
    """A ring of the last ``size`` transitions, as tensors (so it checkpoints as tensors):
    discrete actions (int64), or continuous ones of ``action_dim`` numbers each."""

    def __init__(self, size: int, obs_dim: int, action_dim: int | None = None) -> None:
        actions = (
            torch.zeros(size, dtype=torch.int64)
            if action_dim is None
            else torch.zeros(size, action_dim)
        )
        self.data = {
            "obs": torch.zeros(size, obs_dim),
            "actions": actions,
            "rewards": torch.zeros(size),
            "next_obs": torch.zeros(size, obs_dim),
            "terminated": torch.zeros(size),
        }
        self.size, self.pos, self.full = size, 0, False

    def add(self, **batch: torch.Tensor) -> None:
        n = len(batch["actions"])
        idx = (self.pos + torch.arange(n)) % self.size
        for key, value in batch.items():
            self.data[key][idx] = value
        self.full = self.full or self.pos + n >= self.size
        self.pos = (self.pos + n) % self.size

    def step_into(self, envs, x: torch.Tensor, action: torch.Tensor) -> tuple:
        """Step the vector ``envs`` from observations ``x`` with ``action`` and store each
        transition; s' is the true last observation where an episode ended (the reset one is
        not s'). Returns (next observations, infos, (rewards, s', terminated, truncated))."""
        next_obs, reward, terminated, truncated, info = envs.step(action.numpy())
        real_next = next_obs.copy()
        for i in np.flatnonzero(terminated | truncated):
            real_next[i] = info["final_obs"][i]
        self.add(
            obs=x,
            actions=action,
            rewards=torch.as_tensor(reward, dtype=torch.float32),
            next_obs=as_batch(real_next),
            terminated=torch.as_tensor(terminated, dtype=torch.float32),
        )
        return next_obs, info, (reward, real_next, terminated, truncated)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size if self.full else self.pos, (n,))
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.data, "pos": torch.tensor([self.pos, int(self.full)])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.data = {k: state[k].clone() for k in self.data}
        self.pos, self.full = int(state["pos"][0]), bool(state["pos"][1])


class DQN:
    def __init__(self, cfg: RLConfig, obs_shape: int | tuple[int, ...], n_actions: int) -> None:
        self.cfg, self.c, self.obs_shape = cfg, cfg.dqn, obs_shape
        self.agent = QAgent(obs_shape, n_actions, cfg)
        self.optimizer = build_optimizer(self.agent.q.parameters(), cfg.optim)
        self.buffer = ReplayBuffer(self.c.buffer_size, int(np.prod(obs_shape)))
        self.envs = make_vector_env(cfg.env)
        self.num_envs, self.n_actions = self.envs.num_envs, n_actions  # streams (rl.agents)

    def reset(self, seed: int) -> None:
        """Start a segment: re-seed every env (env i gets seed + i)."""
        self.next_obs, _ = self.envs.reset(seed=seed)
        self.stats = EpisodeStats()

    def epsilon(self, env_steps: int) -> float:
        span = self.c.exploration_fraction * self.cfg.train.total_steps
        frac = min(1.0, env_steps / span) if span > 0 else 1.0
        return self.c.start_e + frac * (self.c.end_e - self.c.start_e)

    def update(self, update: int, env_steps: int) -> dict[str, float]:
        """``train_freq`` steps of every env, then ``gradient_steps`` learning steps."""
        c, n, sims = self.c, self.num_envs, self.cfg.env.num_envs
        lr = anneal(self.optimizer, self.cfg.optim, env_steps, self.cfg.train.total_steps)
        for k in range(c.train_freq):
            x = as_batch(self.next_obs)
            with torch.no_grad():
                greedy = self.agent.greedy(x)
            explore = torch.rand(n) < self.epsilon(env_steps + k * sims)
            action = torch.where(explore, torch.randint(self.n_actions, (n,)), greedy)
            next_obs, info, _ = self.buffer.step_into(self.envs, x, action)
            self.stats.step(info)
            self.next_obs = next_obs
        steps = c.train_freq * sims  # the simulators' steps (each drives every vehicle)
        metrics = {"env_steps": steps, "lr": lr, "dqn/epsilon": self.epsilon(env_steps + steps)}
        if env_steps + steps >= c.learning_starts:
            for _ in range(c.gradient_steps):
                b = self.buffer.sample(c.batch_size)
                target = td_target(
                    self.agent, b["rewards"], b["next_obs"], b["terminated"], c.gamma, c.double
                )
                obs = b["obs"]
                if c.sensor_dropout:
                    obs = drop_sensors(obs, self.obs_shape, c.sensor_dropout)
                q = self.agent.q(obs).gather(1, b["actions"][:, None]).squeeze(1)
                loss = F.smooth_l1_loss(q, target)  # Huber, delta 1
                self.optimizer.zero_grad()
                loss.backward()
                clip_and_step(self.optimizer, self.agent.q, self.cfg.optim.max_grad_norm)
            if (update + 1) % c.target_every == 0:
                self.agent.sync_target()
            metrics.update({"loss/td": loss.item(), "dqn/q": q.mean().item()})
        return {**metrics, **self.stats.pop()}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load_state_dict(state["buffer"])
