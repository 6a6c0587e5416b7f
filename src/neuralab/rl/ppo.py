"""Proximal Policy Optimization (Schulman et al. 2017), after CleanRL's ``ppo.py``.

Each update: roll out ``num_steps`` steps in every env, compute advantages with
GAE(lambda) (Schulman et al. 2016), then take ``update_epochs`` passes of
minibatch gradient steps on the clipped surrogate objective, a (optionally
clipped) value loss and an entropy bonus. Advantages are normalised per
minibatch; the learning rate anneals linearly to zero. Truncated episodes (time
limits) are bootstrapped with the value of their last observation.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from neuralab.rl.config import RLConfig
from neuralab.rl.envs import EpisodeStats, make_vector_env
from neuralab.rl.nets import (
    NatureCNN,
    anneal,
    as_batch,
    build_optimizer,
    clip_and_step,
    init_layer,
    network,
)
from neuralab.runs import autocast_dtype


class ActorCritic(nn.Module):
    """Separate policy and value MLPs, as in CleanRL's ``ppo.py``; on frames (model.kind =
    nature_cnn) one ``NatureCNN`` trunk shared by a linear policy head and a linear value
    head, as in its ``ppo_atari.py``. ``dtype`` (bf16) autocasts the trunk; the heads, and so
    the log-probabilities PPO's ratio compares, stay fp32."""

    def __init__(self, obs_shape: int | tuple[int, ...], n_actions: int, cfg: RLConfig) -> None:
        super().__init__()
        self.trunk: nn.Module = nn.Identity()
        if cfg.model.kind == "nature_cnn":
            self.trunk = NatureCNN(tuple(obs_shape))  # type: ignore[arg-type]
            self.actor = init_layer(nn.Linear(NatureCNN.FEATURES, n_actions), 0.01)
            self.critic = init_layer(nn.Linear(NatureCNN.FEATURES, 1), 1.0)
        else:
            self.actor = network(obs_shape, n_actions, cfg.model, out_std=0.01)
            self.critic = network(obs_shape, 1, cfg.model, out_std=1.0)

    def forward(
        self, x: torch.Tensor, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy logits (B, A), values (B,))."""
        if dtype is None:
            h = self.trunk(x)
        else:
            with torch.autocast(x.device.type, dtype=dtype):
                h = self.trunk(x)
        h = h.float()
        return self.actor(h), self.critic(h).squeeze(-1)

    def value(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self(x, dtype)[1]

    def dist(self, x: torch.Tensor) -> Categorical:
        return Categorical(logits=self.actor(self.trunk(x)))

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor(self.trunk(x)).argmax(-1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and value targets, (T, N) each.

    ``dones[t]`` is 1 where the episode ended at step t: nothing is bootstrapped
    across it. ``next_value`` (N,) is V of the observation after the last step.
    A_t = delta_t + gamma*lam*(1-d_t)*A_{t+1}, delta_t = r_t + gamma*(1-d_t)*V_{t+1} - V_t.
    """
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        v_next = next_value if t == len(rewards) - 1 else values[t + 1]
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * v_next * live - values[t]
        last = delta + gamma * lam * live * last
        advantages[t] = last
    return advantages, advantages + values


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's policy loss: -E[min(r A, clip(r, 1-eps, 1+eps) A)]."""
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    return -torch.min(unclipped, clipped).mean()


class PPO:
    def __init__(self, cfg: RLConfig, obs_shape: int | tuple[int, ...], n_actions: int) -> None:
        self.cfg, self.c = cfg, cfg.ppo
        self.agent = ActorCritic(obs_shape, n_actions, cfg)
        self.optimizer = build_optimizer(self.agent.parameters(), cfg.optim)
        self.envs = make_vector_env(cfg.env)
        self.num_envs = self.envs.num_envs  # streams: k per env with k vehicles (rl.agents)
        self.dtype = autocast_dtype(cfg.train.precision, torch.device("cpu"))

    def reset(self, seed: int) -> None:
        """Start a segment: re-seed every env (env i gets seed + i)."""
        self.next_obs, _ = self.envs.reset(seed=seed)
        self.stats = EpisodeStats()

    def _rollout(self) -> dict[str, torch.Tensor]:
        """``num_steps`` steps of every env; the seconds spent stepping the envs and in the
        networks go to ``self.seconds``."""
        c, n = self.c, self.num_envs
        obs, actions, logprobs, rewards, dones, values = [], [], [], [], [], []
        for _ in range(c.num_steps):
            started = time.perf_counter()
            x = as_batch(self.next_obs)
            with torch.inference_mode():
                logits, value = self.agent(x, self.dtype)
                dist = Categorical(logits=logits)
                action = dist.sample()
                logprob = dist.log_prob(action)
            stepped = time.perf_counter()
            self.seconds["time/inference_s"] += stepped - started
            next_obs, reward, terminated, truncated, info = self.envs.step(action.numpy())
            self.seconds["time/env_s"] += time.perf_counter() - stepped
            done = terminated | truncated
            self.stats.step(info)
            reward = torch.as_tensor(reward, dtype=torch.float32)
            cut = np.flatnonzero(truncated & ~terminated)
            if len(cut):  # time limit: bootstrap with the value of the true last observation
                final = as_batch(np.stack([info["final_obs"][i] for i in cut]))
                with torch.inference_mode():
                    reward[cut] += c.gamma * self.agent.value(final, self.dtype)
            obs.append(x)
            actions.append(action)
            logprobs.append(logprob)
            rewards.append(reward)
            dones.append(torch.as_tensor(done, dtype=torch.float32))
            values.append(value)
            self.next_obs = next_obs
        with torch.inference_mode():
            next_value = self.agent.value(as_batch(self.next_obs), self.dtype)
        batch = {k: torch.stack(v) for k, v in [("obs", obs), ("actions", actions)]}
        batch.update(logprobs=torch.stack(logprobs), values=torch.stack(values))
        adv, ret = gae(
            torch.stack(rewards), batch["values"], torch.stack(dones), next_value, c.gamma,
            c.gae_lambda,
        )  # fmt: skip
        batch.update(advantages=adv, returns=ret)
        return {k: v.reshape(c.num_steps * n, *v.shape[2:]) for k, v in batch.items()}

    def update(self, update: int, env_steps: int) -> dict[str, float]:
        """One rollout and its minibatch epochs; ``env_steps`` taken so far set the lr."""
        c = self.c
        lr = anneal(self.optimizer, self.cfg.optim, env_steps, self.cfg.train.total_steps)
        self.seconds = {"time/env_s": 0.0, "time/inference_s": 0.0}
        b = self._rollout()
        learning = time.perf_counter()
        size = len(b["obs"])
        clipfracs, kls = [], []
        for _ in range(c.update_epochs):
            for mb in torch.randperm(size).split(size // c.num_minibatches):
                logits, v = self.agent(b["obs"][mb], self.dtype)
                dist = Categorical(logits=logits)
                logratio = dist.log_prob(b["actions"][mb]) - b["logprobs"][mb]
                ratio = logratio.exp()
                with torch.no_grad():  # the k3 estimator of KL(old || new)
                    kls.append(((ratio - 1) - logratio).mean())
                    clipfracs.append(((ratio - 1).abs() > c.clip_coef).float().mean())
                adv = b["advantages"][mb]
                if c.norm_adv:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = clipped_surrogate(ratio, adv, c.clip_coef)
                v_loss = (v - b["returns"][mb]) ** 2
                if c.clip_vloss:
                    old = b["values"][mb]
                    v_clipped = old + (v - old).clamp(-c.clip_coef, c.clip_coef)
                    v_loss = torch.max(v_loss, (v_clipped - b["returns"][mb]) ** 2)
                v_loss = 0.5 * v_loss.mean()
                entropy = dist.entropy().mean()
                loss = pg_loss - c.ent_coef * entropy + c.vf_coef * v_loss
                self.optimizer.zero_grad()
                loss.backward()
                clip_and_step(self.optimizer, self.agent, self.cfg.optim.max_grad_norm)
        var = b["returns"].var()
        explained = 1 - (b["returns"] - b["values"]).var() / var if var > 0 else torch.tensor(0.0)
        return {
            "env_steps": c.num_steps * self.cfg.env.num_envs,
            "lr": lr,
            "loss/policy": pg_loss.item(),
            "loss/value": v_loss.item(),
            "loss/entropy": entropy.item(),
            "ppo/approx_kl": torch.stack(kls).mean().item(),
            "ppo/clip_frac": torch.stack(clipfracs).mean().item(),
            "ppo/explained_variance": explained.item(),
            **self.seconds,
            "time/learn_s": time.perf_counter() - learning,
            **self.stats.pop(),
        }

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
