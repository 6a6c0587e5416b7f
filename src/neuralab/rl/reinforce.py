"""REINFORCE (Williams 1992) with a baseline; the Pong preset is Karpathy's "Pong from Pixels".

Each update plays one whole episode in each of ``env.num_envs`` envs with the
current stochastic policy, computes discounted returns G_t that reset at
episode ends (and, with ``reset_on_reward``, at every point scored in Pong), and
ascends sum_t log pi(a_t|s_t) (G_t - b_t), divided by the batch's number of steps
unless ``reduction="sum"`` (pg-pong adds the gradients of every step of its batch of
episodes; under RMSProp with eps 1e-5 the mean of ~10^4 steps would be about 1e4
times smaller and drowned by eps). The baseline b_t is a learned state value
(``baseline="value"``), or the batch's mean return with the returns divided by
their standard deviation (``"normalize"``, as pg-pong does).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from neuralab.rl.config import RLConfig
from neuralab.rl.envs import make_env, play_episodes
from neuralab.rl.nets import anneal, as_batch, build_optimizer, clip_and_step, network


def discounted_returns(rewards: torch.Tensor, dones: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * (1 - d_t) * G_{t+1} along the first axis; d_t = 1 ends a return."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * (1.0 - dones[t]) * running
        returns[t] = running
    return returns


class PolicyNet(nn.Module):
    """A softmax policy, and a state-value network when the baseline is learned."""

    def __init__(self, obs_shape: int | tuple[int, ...], n_actions: int, cfg: RLConfig) -> None:
        super().__init__()
        self.actor = network(obs_shape, n_actions, cfg.model, out_std=0.01)
        value = cfg.reinforce.baseline == "value"
        self.critic = network(obs_shape, 1, cfg.model) if value else None

    def dist(self, x: torch.Tensor) -> Categorical:
        return Categorical(logits=self.actor(x))

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor(x).argmax(-1)


class Reinforce:
    def __init__(self, cfg: RLConfig, obs_shape: int | tuple[int, ...], n_actions: int) -> None:
        self.cfg, self.c = cfg, cfg.reinforce
        self.agent = PolicyNet(obs_shape, n_actions, cfg)
        self.optimizer = build_optimizer(self.agent.parameters(), cfg.optim)
        self.envs = [make_env(cfg.env) for _ in range(cfg.env.num_envs)]

    def reset(self, seed: int) -> None:
        """Start a segment: the next episodes reset env i with seed + i."""
        self.seeds: list[int | None] = [seed + i for i in range(len(self.envs))]

    def _act(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.agent.dist(as_batch(obs)).sample().numpy()

    def update(self, update: int, env_steps: int) -> dict[str, float]:
        """A batch of whole episodes, then one gradient step."""
        c = self.c
        lr = anneal(self.optimizer, self.cfg.optim, env_steps, self.cfg.train.total_steps)
        episodes = play_episodes(self.envs, self._act, self.seeds)
        self.seeds = [None] * len(self.envs)  # later episodes continue each env's RNG
        returns = []
        for ep in episodes:
            rewards = torch.as_tensor(ep.rewards)
            dones = torch.zeros_like(rewards)
            dones[-1] = 1.0
            if c.reset_on_reward:
                dones[rewards != 0] = 1.0
            returns.append(discounted_returns(rewards, dones, c.gamma))
        all_returns = torch.cat(returns)
        mean, std = all_returns.mean(), all_returns.std() + 1e-8
        total = len(all_returns)
        scale = total if c.reduction == "mean" else 1
        self.optimizer.zero_grad()
        policy_loss = value_loss = 0.0
        for ep, ret in zip(episodes, returns, strict=True):  # one episode at a time: Pong
            x = as_batch(ep.obs)  # is 10 episodes x ~1000 frames x 6400 pixels
            logp = F.log_softmax(self.agent.actor(x), -1)
            logp = logp.gather(1, torch.as_tensor(ep.actions)[:, None]).squeeze(1)
            if self.agent.critic is not None:
                v = self.agent.critic(x).squeeze(1)
                adv = ret - v.detach()
                v_loss = ((v - ret) ** 2).sum() / scale
            else:
                adv = (ret - mean) / std
                v_loss = torch.zeros(())
            pg_loss = -(logp * adv).sum() / scale
            (pg_loss + c.vf_coef * v_loss).backward()
            policy_loss += pg_loss.item()
            value_loss += v_loss.item()
        clip_and_step(self.optimizer, self.agent, self.cfg.optim.max_grad_norm)
        totals = [ep.total for ep in episodes]
        return {
            "env_steps": total,
            "lr": lr,
            "loss/policy": policy_loss,
            "loss/value": value_loss,
            "train/episode_return": float(np.mean(totals)),
            "train/episode_length": total / len(episodes),
            "train/episodes": len(episodes),
        }

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
