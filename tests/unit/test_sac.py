"""Soft actor-critic and hindsight experience replay: the pieces against hand-worked values
and independent implementations (torch.distributions, highway-env's own reward)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")
pytest.importorskip("highway_env")

from neuralab.rl import config as rl_config  # noqa: E402
from neuralab.rl.envs import make_env  # noqa: E402
from neuralab.rl.her import GoalSpec, goal_spec, relabel  # noqa: E402
from neuralab.rl.run import build  # noqa: E402
from neuralab.rl.sac import (  # noqa: E402
    SACAgent,
    soft_target,
    squashed_log_prob,
    temperature_loss,
)


def cfg_of(preset: str, *overrides: str) -> rl_config.RLConfig:
    return rl_config.load(preset, list(overrides))


def test_squashed_log_prob_equals_torch_tanh_transformed_normal() -> None:
    """Oracle: torch.distributions' Normal pushed through TanhTransform gives the same log
    density of a = tanh(u), summed over the action's dimensions (float64, |u| up to 4)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(64, 3, generator=g, dtype=torch.float64)
    log_std = torch.rand(64, 3, generator=g, dtype=torch.float64) * 2 - 1.5
    u = (torch.rand(64, 3, generator=g, dtype=torch.float64) * 8 - 4).clamp(-4, 4)
    oracle = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()),
        [torch.distributions.TanhTransform(cache_size=1)],
    )
    a = oracle.transforms[0](u)  # caches u, so log_prob inverts tanh exactly
    torch.testing.assert_close(squashed_log_prob(u, mean, log_std), oracle.log_prob(a).sum(-1))


def test_squashed_log_prob_stays_finite_where_tanh_saturates() -> None:
    """At u = 30, tanh(u) is 1.0 in float32 and log(1 - tanh^2) would be -inf."""
    logp = squashed_log_prob(torch.tensor([[30.0]]), torch.tensor([[30.0]]), torch.tensor([[0.0]]))
    assert torch.isfinite(logp).all()
    assert logp.item() == pytest.approx(-0.5 * math.log(2 * math.pi) + 2 * 30 - 2 * math.log(2))


def test_soft_target_by_hand() -> None:
    """y = r + gamma (1 - d) (min(Q1', Q2') - alpha log pi'), worked by hand:
    1 + 0.9 * (min(2, 1.5) - 0.2 * (-1)) = 2.53; the terminated step keeps its reward."""
    got = soft_target(
        rewards=torch.tensor([1.0, 0.5]),
        terminated=torch.tensor([0.0, 1.0]),
        next_q1=torch.tensor([2.0, 3.0]),
        next_q2=torch.tensor([1.5, 4.0]),
        next_log_prob=torch.tensor([-1.0, 0.5]),
        alpha=0.2,
        gamma=0.9,
    )
    torch.testing.assert_close(got, torch.tensor([2.53, 0.5]))


def test_temperature_step_by_hand() -> None:
    """log pi = [-1, -3]: entropy 2, above the target -1, so alpha must fall. The loss is
    -log(alpha) * (mean log pi + target) = 3 log(alpha), its gradient 3; one SGD step of 0.1
    takes log(alpha) from log(0.5) to log(0.5) - 0.3. Below the target it rises."""
    log_alpha = torch.nn.Parameter(torch.tensor(math.log(0.5)))
    opt = torch.optim.SGD([log_alpha], lr=0.1)
    loss = temperature_loss(log_alpha, torch.tensor([-1.0, -3.0]), target_entropy=-1.0)
    assert loss.item() == pytest.approx(3 * math.log(0.5))
    loss.backward()
    opt.step()
    assert log_alpha.item() == pytest.approx(math.log(0.5) - 0.3)
    opt.zero_grad()
    temperature_loss(log_alpha, torch.tensor([2.0]), target_entropy=-1.0).backward()
    assert log_alpha.grad.item() < 0  # entropy -2 < -1: the step raises alpha


class FixedDraws:
    """Stands in for np.random.Generator: ``random`` returns the given numbers in order."""

    def __init__(self, values: list[float]) -> None:
        self.values = np.array(values)

    def random(self, n: int) -> np.ndarray:
        assert n == len(self.values)
        return self.values


def test_her_future_relabelling_by_hand() -> None:
    """A 1-D world: the observation is (position, achieved = position, desired goal). The
    episode moves 0 -> 1 -> 2 -> 3 towards goal 10 and ends by a crash (penalty -5) at 3.
    Reward -|achieved - desired|, success when closer than 0.5. With k = 1 and draws
    (0, 0.99, 0.5) the future steps are j = 0, 1 + floor(0.99 * 2) = 2 and 2, so the goals
    are the positions reached at steps 0, 2, 2: 1, 3, 3. By hand:
    step 0 reaches 1 = its goal: reward 0, terminated; step 1 reaches 2, goal 3: reward -1,
    not terminated; step 2 reaches 3 = its goal, but also crashed: reward 0 - 5, terminated."""
    spec = GoalSpec(
        obs_dim=1,
        goal_dim=1,
        reward=lambda a, d: -np.abs(a - d).sum(-1),
        success=lambda a, d: np.abs(a - d).sum(-1) < 0.5,
    )
    pos = np.array([0.0, 1.0, 2.0, 3.0])
    obs = np.stack([pos[:3], pos[:3], np.full(3, 10.0)], 1).astype(np.float32)
    next_obs = np.stack([pos[1:], pos[1:], np.full(3, 10.0)], 1).astype(np.float32)
    rewards = np.array([-9.0, -8.0, -7.0 - 5.0], np.float32)
    terminated = np.array([0.0, 0.0, 1.0], np.float32)
    t, o, r, o2, d = relabel(
        spec, obs, rewards, next_obs, terminated, 1, FixedDraws([0, 0.99, 0.5])
    )
    np.testing.assert_array_equal(t, [0, 1, 2])
    np.testing.assert_allclose(r, [0.0, -1.0, -5.0])
    np.testing.assert_array_equal(d, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(o[:, 2], [1.0, 3.0, 3.0])  # the new goals
    np.testing.assert_array_equal(o2[:, 2], [1.0, 3.0, 3.0])
    np.testing.assert_array_equal(o[:, :2], obs[:, :2])  # the rest unchanged
    np.testing.assert_array_equal(o2[:, :2], next_obs[:, :2])
    assert obs[0, 2] == 10.0  # the episode itself is not modified


def test_her_goals_come_from_the_future_of_each_step() -> None:
    """With a real generator and k = 4, every copy of step t takes the goal of a step j >= t,
    and j = T - 1 (the last step) is reachable: no goal from the past, none past the end."""
    spec = GoalSpec(
        1, 1, lambda a, d: -np.abs(a - d).sum(-1), lambda a, d: np.abs(a - d).sum(-1) < 0.5
    )
    n = 20
    pos = np.arange(n + 1, dtype=np.float32)
    obs = np.stack([pos[:n], pos[:n], np.full(n, 99.0)], 1)
    next_obs = np.stack([pos[1:], pos[1:], np.full(n, 99.0)], 1)
    t, o, *_ = relabel(
        spec, obs, np.zeros(n, np.float32), next_obs, np.zeros(n), 4, np.random.default_rng(0)
    )
    j = o[:, 2] - 1  # goal = position reached at step j = j + 1
    assert len(t) == 4 * n and (j >= t).all() and (j <= n - 1).all()
    assert (j == n - 1).any() and (j == t).any()


def test_parking_goal_reward_is_highway_envs_own() -> None:
    """parking-v0 reaches the networks as one vector [observation, achieved, desired]; the goal
    spec read from it reproduces the env's own reward at every step of a random drive (no
    crash), and its success flag the env's ``is_success``."""
    cfg = cfg_of("parking_sac_her")
    env = make_env(cfg.env)
    spec = goal_spec(env)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (18,) and (spec.obs_dim, spec.goal_dim) == (6, 6)
    env.action_space.seed(3)
    for _ in range(15):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if info["crashed"]:
            break
        got = spec.reward(spec.achieved(obs)[None], spec.desired(obs)[None])[0]
        assert got == pytest.approx(reward, abs=1e-5)
        assert bool(spec.success(spec.achieved(obs)[None], spec.desired(obs)[None])[0]) == bool(
            info["is_success"]
        )
    env.close()


def test_sac_actions_lie_in_the_box_and_greedy_is_the_squashed_mean() -> None:
    cfg = cfg_of("pendulum_sac", "model.hidden=[16]")
    agent = SACAgent(3, 1, cfg)
    x = torch.randn(256, 3) * 5
    a, logp = agent.act(x)
    assert a.shape == (256, 1) and logp.shape == (256,) and a.abs().max() <= 1
    torch.testing.assert_close(agent.greedy(x), torch.tanh(agent.gaussian(x)[0]))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(agent.sample(x, g1), agent.sample(x, g2))


def test_her_fills_the_buffer_with_k_copies_of_each_finished_episode() -> None:
    """Two parking envs, 10-step episodes, 12 steps each: 24 real transitions and 4 copies
    of each step of the 2 finished episodes (2 x 10 x 4 = 80)."""
    cfg = cfg_of(
        "parking_sac_her",
        "env.max_episode_steps=10",
        "env.vector=sync",
        "sac.train_freq=12",
        "sac.learning_starts=1000",
        "model.hidden=[16]",
    )
    algo = build(cfg)
    algo.reset(0)
    algo.update(0, 0)
    assert algo.buffer.pos == 24 + 80
    # steps 0-9 of both envs fill rows 0-19; the episodes end there and add their copies
    # (rows 20-99), then steps 10 and 11 follow (rows 100-103)
    data = {k: v.numpy() for k, v in algo.buffer.data.items()}
    goals, copies = algo.goals, data["obs"][20:100]
    reached = {tuple(np.round(goals.achieved(r), 5)) for r in data["next_obs"][:20]}
    assert all(tuple(np.round(goals.desired(c), 5)) in reached for c in copies)
    real_goals = {tuple(np.round(goals.desired(r), 5)) for r in data["obs"][:20]}
    assert len(real_goals) == 2 and not real_goals & reached  # the spots were not reached
