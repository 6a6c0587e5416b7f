"""Soft actor-critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
arXiv 1812.05905) for continuous actions, with hindsight experience replay for goals.

SAC maximises return plus the policy's entropy, weighted by a temperature alpha:
- two critics Q1, Q2 regress on r + gamma * (1 - terminated) * (min_i Q_i'(s', a') -
  alpha * log pi(a'|s')), a' drawn from the current policy, Q_i' slowly moving (Polyak)
  copies of the critics (``soft_target``); the minimum curbs overestimation (Fujimoto et al.
  2018);
- the actor, a Gaussian squashed by tanh into [-1, 1], minimises alpha * log pi(a|s) -
  min_i Q_i(s, a) through the reparameterised sample a;
- alpha is learned (``temperature_loss``) so the policy's entropy tracks a target, -dim(A)
  by default.
The three updates of each gradient step come in CleanRL's order (``sac_continuous_action``:
critics, actor, temperature); the temperature's loss is on log alpha, as in
Stable-Baselines3, with the actor step's log-probabilities. Each update acts ``train_freq`` steps
in every env (uniformly random actions for the first ``learning_starts`` steps), then takes
``gradient_steps`` gradient steps on minibatches from the replay buffer; with ``her_k`` > 0
every finished episode also adds its HER copies (``neuralab.rl.her``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuralab.rl.config import RLConfig
from neuralab.rl.dqn import ReplayBuffer
from neuralab.rl.envs import EpisodeStats, make_env, make_vector_env
from neuralab.rl.her import goal_spec, relabel
from neuralab.rl.nets import anneal, as_batch, build_optimizer, clip_and_step, mlp

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # Stable-Baselines3's bounds on the Gaussian's log std


def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(tanh(u)) (B,) for u ~ N(mean, exp(log_std)) per dimension: the Gaussian's log
    density minus log |d tanh(u)/du| = log(1 - tanh(u)^2), written as 2 (log 2 - u -
    softplus(-2u)), which stays finite where tanh(u) rounds to +-1."""
    gauss = torch.distributions.Normal(mean, log_std.exp()).log_prob(u)
    jacobian = 2 * (math.log(2) - u - F.softplus(-2 * u))
    return (gauss - jacobian).sum(-1)


def soft_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: float | torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """The critics' regression target r + gamma * (1 - terminated) * (min(Q1', Q2') -
    alpha * log pi(a'|s')), all (B,)."""
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_prob
    return rewards + gamma * (1.0 - terminated) * soft_value


def temperature_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """-log alpha * mean(log pi + target entropy), the policy's log-probabilities held fixed:
    its gradient raises alpha while the entropy (-log pi) is below the target, lowers it above."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


class Critic(nn.Module):
    """Q(s, a): an MLP on the observation and the action, concatenated."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: RLConfig) -> None:
        super().__init__()
        self.net = mlp(obs_dim + action_dim, 1, cfg.model)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs.flatten(1), action], -1)).squeeze(-1)


class SACAgent(nn.Module):
    """The squashed-Gaussian actor, the two critics, their target copies and log alpha.

    ``greedy`` acts with tanh of the Gaussian's mean (evaluation); ``sample`` draws from the
    policy with a generator of its own; ``act`` draws with the global RNG (training).
    """

    def __init__(self, obs_shape: int | tuple[int, ...], action_dim: int, cfg: RLConfig) -> None:
        super().__init__()
        obs_dim = math.prod((obs_shape,) if isinstance(obs_shape, int) else obs_shape)
        self.action_dim = action_dim
        self.actor = mlp(obs_dim, 2 * action_dim, cfg.model, out_std=0.01)
        self.q1, self.q2 = Critic(obs_dim, action_dim, cfg), Critic(obs_dim, action_dim, cfg)
        self.q1_target, self.q2_target = (
            Critic(obs_dim, action_dim, cfg),
            Critic(obs_dim, action_dim, cfg),
        )
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        self.q1_target.requires_grad_(False)
        self.q2_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.sac.alpha)))

    def gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(obs.flatten(1)).chunk(2, -1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def act(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a = tanh(u), log pi(a|s)) for u = mean + std * noise, reparameterised."""
        mean, log_std = self.gaussian(obs)
        noise = torch.randn(mean.shape, generator=generator)
        u = mean + log_std.exp() * noise
        return torch.tanh(u), squashed_log_prob(u, mean, log_std)

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.gaussian(obs)[0])

    def sample(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.act(obs, generator)[0]


class SAC:
    def __init__(self, cfg: RLConfig, obs_shape: int | tuple[int, ...], action_dim: int) -> None:
        self.cfg, self.c = cfg, cfg.sac
        self.agent = SACAgent(obs_shape, action_dim, cfg)
        critics = [*self.agent.q1.parameters(), *self.agent.q2.parameters()]
        self.actor_opt = build_optimizer(self.agent.actor.parameters(), cfg.optim)
        self.critic_opt = build_optimizer(critics, cfg.optim)
        self.alpha_opt = build_optimizer([self.agent.log_alpha], cfg.optim)
        self.target_entropy = self.c.target_entropy * action_dim
        self.buffer = ReplayBuffer(
            self.c.buffer_size, math.prod(np.atleast_1d(obs_shape)), action_dim
        )
        self.envs = make_vector_env(cfg.env)
        self.num_envs, self.action_dim = cfg.env.num_envs, action_dim
        self.goals = None
        if self.c.her_k:
            probe = make_env(cfg.env)  # its reward function relabels; it never steps
            self.goals = goal_spec(probe)

    def reset(self, seed: int) -> None:
        """Start a segment: re-seed every env (env i gets seed + i); unfinished episodes are
        dropped from HER's bookkeeping (their real transitions are in the buffer)."""
        self.next_obs, _ = self.envs.reset(seed=seed)
        self.stats = EpisodeStats()
        self.episodes: list[list[tuple]] = [[] for _ in range(self.num_envs)]
        self.her_rng = np.random.default_rng(seed)

    def update(self, update: int, env_steps: int) -> dict[str, float]:
        """``train_freq`` steps of every env, then ``gradient_steps`` learning steps."""
        c, n = self.c, self.num_envs
        lr = anneal(self.actor_opt, self.cfg.optim, env_steps, self.cfg.train.total_steps)
        for opt in (self.critic_opt, self.alpha_opt):
            anneal(opt, self.cfg.optim, env_steps, self.cfg.train.total_steps)
        for k in range(c.train_freq):
            x = as_batch(self.next_obs)
            if env_steps + k * n < c.learning_starts:
                action = torch.rand(n, self.action_dim) * 2 - 1
            else:
                with torch.inference_mode():
                    action = self.agent.act(x)[0]
            next_obs, info, transition = self.buffer.step_into(self.envs, x, action)
            if self.goals is not None:
                self._hindsight(x.numpy(), action.numpy(), *transition)
            self.stats.step(info)
            self.next_obs = next_obs
        steps = c.train_freq * n
        metrics: dict[str, float] = {"env_steps": steps, "lr": lr}
        if env_steps + steps >= c.learning_starts and c.gradient_steps:
            for _ in range(c.gradient_steps):
                last = self._learn(self.buffer.sample(c.batch_size))
            metrics |= {k: v.item() for k, v in last.items()}  # the last step's
        return {**metrics, **self.stats.pop()}

    def _hindsight(self, obs, actions, reward, next_obs, terminated, truncated) -> None:
        """Keep each env's episode; when it ends, add its HER copies to the buffer."""
        for i in range(self.num_envs):
            self.episodes[i].append((obs[i], actions[i], reward[i], next_obs[i], terminated[i]))
            if terminated[i] or truncated[i]:
                o, a, r, o2, d = (np.stack(v) for v in zip(*self.episodes[i], strict=True))
                t, o, r, o2, d = relabel(self.goals, o, r, o2, d, self.c.her_k, self.her_rng)
                self.buffer.add(
                    obs=torch.from_numpy(o),
                    actions=torch.from_numpy(a[t]),
                    rewards=torch.from_numpy(r),
                    next_obs=torch.from_numpy(o2),
                    terminated=torch.from_numpy(d),
                )
                self.episodes[i] = []

    def _learn(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step of the critics, the actor and the temperature (in that order)."""
        agent, alpha = self.agent, self.agent.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_log_prob = agent.act(b["next_obs"])
            target = soft_target(
                b["rewards"],
                b["terminated"],
                agent.q1_target(b["next_obs"], next_action),
                agent.q2_target(b["next_obs"], next_action),
                next_log_prob,
                alpha,
                self.c.gamma,
            )
        q1, q2 = agent.q1(b["obs"], b["actions"]), agent.q2(b["obs"], b["actions"])
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        clip_and_step(self.critic_opt, agent.q1, self.cfg.optim.max_grad_norm, agent.q2)

        action, log_prob = agent.act(b["obs"])
        q_pi = torch.min(agent.q1(b["obs"], action), agent.q2(b["obs"], action))
        actor_loss = (alpha * log_prob - q_pi).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        clip_and_step(self.actor_opt, agent.actor, self.cfg.optim.max_grad_norm)

        if self.c.autotune:
            alpha_loss = temperature_loss(agent.log_alpha, log_prob, self.target_entropy)
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
        with torch.no_grad():
            for net, target_net in ((agent.q1, agent.q1_target), (agent.q2, agent.q2_target)):
                for p, p_target in zip(net.parameters(), target_net.parameters(), strict=True):
                    p_target.lerp_(p, self.c.tau)
        return {
            "loss/critic": critic_loss.detach(),
            "loss/actor": actor_loss.detach(),
            "sac/alpha": alpha,
            "sac/entropy": -log_prob.detach().mean(),
            "sac/q": q1.detach().mean(),
        }

    def state_dict(self) -> dict:
        return {
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("actor_opt", "critic_opt", "alpha_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.buffer.load_state_dict(state["buffer"])
