"""Reinforcement learning: returns, GAE, PPO's objective, DQN's target, envs, runs, resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from neuralab.errors import UserError  # noqa: E402
from neuralab.rl import config as rl_config  # noqa: E402
from neuralab.rl import reinforce  # noqa: E402
from neuralab.rl.dqn import QAgent, td_target  # noqa: E402
from neuralab.rl.envs import (  # noqa: E402
    EpisodeStats,
    make_env,
    make_vector_env,
    pong_frame,
)
from neuralab.rl.evaluate import evaluate  # noqa: E402
from neuralab.rl.nets import anneal, build_optimizer  # noqa: E402
from neuralab.rl.ppo import PPO, clipped_surrogate, gae  # noqa: E402
from neuralab.rl.reinforce import Reinforce, discounted_returns  # noqa: E402
from neuralab.rl.run import AGENTS, new_run_dir, train  # noqa: E402
from neuralab.train import checkpoint  # noqa: E402

PRESETS = [
    "cartpole_reinforce",
    "cartpole_ppo",
    "cartpole_dqn",
    "lunarlander_ppo",
    "pong_pg",
    "pong_ppo",
    "pendulum_sac",
    "parking_sac_her",
    "racetrack_sac",
    "highway_fusion_dqn",
    "intersection_shared_dqn",
]


def cfg_of(preset: str, *overrides: str) -> rl_config.RLConfig:
    return rl_config.load(preset, list(overrides))


# ------------------------------------------------------------------ returns and advantages


def test_discounted_returns_reset_at_episode_ends() -> None:
    """G_t = r_t + gamma G_{t+1} by hand, and no return flows back across an episode end."""
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0])
    dones = torch.tensor([0.0, 1.0, 0.0, 1.0])
    got = discounted_returns(rewards, dones, 0.5)
    torch.testing.assert_close(got, torch.tensor([1.5, 1.0, 1.5, 1.0]))


def test_discounted_returns_reset_at_each_pong_point() -> None:
    """With Pong's rule (a nonzero reward ends a return), each point is its own return."""
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0, -1.0])
    dones = (rewards != 0).float()
    got = discounted_returns(rewards, dones, 0.5)
    torch.testing.assert_close(got, torch.tensor([0.25, 0.5, 1.0, -0.5, -1.0]))


def test_reinforce_sum_reduction_is_pg_pongs_summed_gradient(monkeypatch) -> None:
    """pg-pong adds up the gradient of every step of its batch; ``reduction="sum"`` gives
    exactly the mean reduction's gradient times the batch's number of steps."""
    grads = {}

    def record(optimizer, agent, max_norm):
        grads[len(grads)] = [p.grad.clone() for p in agent.parameters() if p.grad is not None]

    monkeypatch.setattr(reinforce, "clip_and_step", record)
    steps = []
    for reduction in ("mean", "sum"):
        cfg = cfg_of("cartpole_reinforce", "env.num_envs=2", f"reinforce.reduction={reduction}")
        torch.manual_seed(0)
        algo = Reinforce(cfg, 4, 2)
        algo.reset(seed=0)
        steps.append(algo.update(0, 0)["env_steps"])
    assert steps[0] == steps[1] and steps[0] > 2
    for mean_grad, sum_grad in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(sum_grad, mean_grad * steps[0], rtol=1e-5, atol=1e-6)


def test_gae_hand_computed_with_an_episode_end() -> None:
    """GAE(gamma=.9, lambda=.8) on 3 steps with an episode ending at step 1, by hand."""
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.5], [0.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = gae(rewards, values, dones, torch.tensor([2.0]), 0.9, 0.8)
    # t=2: 1 + .9*2 - .5 = 2.3; t=1 (ends): 1 - .5 = .5; t=0: (1 + .9*.5 - .5) + .9*.8*.5 = 1.31
    torch.testing.assert_close(adv, torch.tensor([[1.31], [0.5], [2.3]]))
    torch.testing.assert_close(ret, adv + values)


def test_gae_with_lambda_one_is_the_discounted_return_minus_value() -> None:
    """lambda = 1 makes GAE the Monte-Carlo advantage: discounted return (bootstrapped at the
    end of the rollout) minus V, episode boundaries included; several envs at once."""
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.rand(6, 3, generator=g), torch.rand(6, 3, generator=g)
    dones = torch.zeros(6, 3)
    dones[2, 0] = dones[4, 1] = 1.0
    next_value = torch.rand(3, generator=g)
    adv, _ = gae(rewards, values, dones, next_value, 0.9, 1.0)
    boot = rewards.clone()
    boot[-1] += 0.9 * next_value * (1 - dones[-1])
    torch.testing.assert_close(adv, discounted_returns(boot, dones, 0.9) - values)


def test_ppo_clipped_objective_equals_the_formula() -> None:
    """-mean(min(r A, clip(r, .8, 1.2) A)) on a toy batch, term by term by hand."""
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.5, 0.7])
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0, -1.0])
    # min terms: 0.5, -1, 2.4 (clipped), -3 (unclipped), -0.8 (clipped)
    loss = clipped_surrogate(ratio, adv, 0.2)
    torch.testing.assert_close(loss, torch.tensor(-(0.5 - 1.0 + 2.4 - 3.0 - 0.8) / 5))


@pytest.mark.parametrize("anneal_lr", [True, False])
def test_lr_annealing_is_the_loops_linear_schedule_bit_for_bit(anneal_lr: bool) -> None:
    """optim.anneal_lr uses the training loop's schedule (lr_factor's "linear" with no
    warm-up and no floor, or "constant"), and sets exactly CleanRL's lr * (1 - done), done
    the fraction of the run's env steps taken, float for float, at every update of a run."""
    cfg = cfg_of("cartpole_ppo", f"optim.anneal_lr={str(anneal_lr).lower()}")
    optimizer = build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg.optim)
    total = cfg.train.total_steps
    for env_steps in range(0, total, 256):
        lr = anneal(optimizer, cfg.optim, env_steps, total)
        expected = cfg.optim.lr * (1.0 - env_steps / total) if anneal_lr else cfg.optim.lr
        assert lr == expected and optimizer.param_groups[0]["lr"] == expected


# ------------------------------------------------------------------------------- DQN


def test_dqn_target_uses_the_target_network_and_no_gradient_reaches_it() -> None:
    """The TD target is r + gamma (1-d) Q_target(s', argmax): changing the online net leaves
    the plain target unchanged, Double DQN lets the online net choose the action, and a
    backward pass through the loss leaves the target network without gradients."""
    cfg = cfg_of("cartpole_dqn", "model.hidden=[8]")
    torch.manual_seed(0)
    agent = QAgent(4, 2, cfg)
    with torch.no_grad():
        for p in agent.target.parameters():
            p.add_(torch.randn_like(p))
    s2, r, d = torch.randn(5, 4), torch.ones(5), torch.tensor([0.0, 0, 1, 0, 0])
    q_target = agent.target(s2).detach()
    expected = r + 0.9 * (1 - d) * q_target.max(1).values
    torch.testing.assert_close(td_target(agent, r, s2, d, 0.9, double=False), expected)
    with torch.no_grad():
        for p in agent.q.parameters():
            p.mul_(-3.0)
    torch.testing.assert_close(td_target(agent, r, s2, d, 0.9, double=False), expected)
    pick = agent.q(s2).argmax(1, keepdim=True)
    double = r + 0.9 * (1 - d) * q_target.gather(1, pick).squeeze(1)
    target = td_target(agent, r, s2, d, 0.9, double=True)
    torch.testing.assert_close(target, double)
    assert not target.requires_grad
    q = agent.q(torch.randn(5, 4))[:, 0]
    torch.nn.functional.smooth_l1_loss(q, target).backward()
    assert all(p.grad is None for p in agent.target.parameters())
    assert all(p.grad is not None for p in agent.q.parameters())


# ------------------------------------------------------------------------------- envs


def test_vector_env_resets_on_the_same_step_with_the_final_observation() -> None:
    """SAME_STEP autoreset: CartPole's reward is 1 on every step (no reward-0 'reset step'
    as with Gymnasium's default NEXT_STEP mode), and the step that ends an episode carries
    the true last observation in infos['final_obs'] while returning the next episode's
    first one."""
    cfg = cfg_of("cartpole_ppo", "env.num_envs=2")
    envs = make_vector_env(cfg.env)
    envs.reset(seed=0)
    stats, ends = EpisodeStats(), 0
    for _ in range(100):
        obs, reward, terminated, truncated, info = envs.step(np.zeros(2, dtype=np.int64))
        assert (reward == 1.0).all()
        done = terminated | truncated
        stats.step(info)
        for i in np.flatnonzero(done):
            ends += 1
            assert abs(info["final_obs"][i][2]) > 0.2  # fell over: pole angle past the limit
            assert np.abs(obs[i]).max() <= 0.05  # a fresh episode's first observation
    assert ends > 0 and stats.pop()["train/episodes"] == ends


def test_episode_statistics_are_every_episodes_own_sums() -> None:
    """Gymnasium's RecordEpisodeStatistics, which the training episodes' returns and lengths
    come from, reports exactly the sum of each episode's rewards (in float64, as they are
    added up step by step) and its number of steps, for every episode of every env, not
    only the first: Gymnasium before 1.4 dropped the first step of each later episode under
    SAME_STEP autoreset. LunarLander's rewards are fractional, so any lost or extra step or
    other order of summation shows."""
    pytest.importorskip("Box2D")
    cfg = cfg_of("lunarlander_ppo", "env.num_envs=3")
    envs = make_vector_env(cfg.env)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    stats = EpisodeStats()
    running, length = np.zeros(3), np.zeros(3, dtype=np.int64)
    returns, lengths = [], []
    while len(returns) < 9:
        _, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        running += reward
        length += 1
        stats.step(info)
        for i in np.flatnonzero(terminated | truncated):
            returns.append(float(running[i]))
            lengths.append(int(length[i]))
            running[i], length[i] = 0.0, 0
    assert stats.returns == returns and stats.lengths == lengths
    assert len(set(lengths)) > 1 and any(r != round(r) for r in returns)


def test_pong_preprocessing_as_in_pg_pong() -> None:
    """Crop, 2x downsample, background erased, objects = 1; then frame differences, int8."""
    rgb = np.full((210, 160, 3), 144, np.uint8)
    rgb[35:195:2, ::2, 0][10, 20] = 92  # one object pixel inside the play area
    rgb[0:35, :, 0] = 236  # the score bar: cropped away
    frame = pong_frame(rgb)
    assert frame.shape == (6400,) and frame.dtype == np.int8
    assert frame.sum() == 1 and frame.reshape(80, 80)[10, 20] == 1
    env = make_env(cfg_of("pong_pg").env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6400,) and obs.min() >= 0
    obs2 = env.step(0)[0]
    assert set(np.unique(obs2)) <= {-1, 0, 1} and env.action_space.n == 2


def test_unknown_env_and_the_wrong_kind_of_actions_are_user_errors(tmp_path) -> None:
    """A typo in env.id, continuous actions for a discrete algorithm or discrete ones for SAC
    are one clear UserError each, before any run directory is made."""
    with pytest.raises(UserError, match="CartPol-v1"):
        make_env(cfg_of("cartpole_ppo", "env.id=CartPol-v1").env)
    with pytest.raises(UserError, match="continuous actions.*algo=sac"):
        new_run_dir(tmp_path / "a", cfg_of("cartpole_ppo", "env.id=Pendulum-v1"))
    with pytest.raises(UserError, match="algo=sac acts continuously"):
        new_run_dir(tmp_path / "b", cfg_of("pendulum_sac", "env.id=CartPole-v1"))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_round_trip_through_toml(preset: str, tmp_path) -> None:
    """Every preset is valid, and the config saved in a run reads back equal."""
    cfg = cfg_of(preset)
    path = tmp_path / "c.toml"
    path.write_text(rl_config.to_toml(cfg))
    assert rl_config.load(path) == cfg


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("ppo.gama=0.9", "unknown config key 'ppo.gama'"),
        ("env.num_envs=two", "'env.num_envs' must be an integer"),
        ("optim.name=sgd", "must be one of adam, rmsprop"),
        ("algo=a2c", "must be one of reinforce, ppo, dqn"),
        ("ppo.num_minibatches=3", "must divide"),
        ("train.total_steps=0", "must be positive"),
    ],
)
def test_bad_config_values_are_one_line_user_errors(override: str, fragment: str) -> None:
    """Unknown keys, wrong types, bad choices and impossible sizes name the key."""
    with pytest.raises(UserError, match=fragment):
        cfg_of("cartpole_ppo", override)


# -------------------------------------------------------------------------------- runs


def tiny(preset: str, *overrides: str) -> rl_config.RLConfig:
    small = {
        "cartpole_ppo": ["ppo.num_steps=16", "ppo.update_epochs=2", "env.num_envs=2"],
        "cartpole_dqn": ["dqn.train_freq=32", "dqn.gradient_steps=4", "dqn.learning_starts=64"],
        "cartpole_reinforce": ["env.num_envs=2"],
        "pong_ppo": [  # 30-step games, so episodes end (truncated) within the segments
            "ppo.num_steps=8",
            "ppo.num_minibatches=2",
            "ppo.update_epochs=1",
            "env.num_envs=2",
            "env.max_episode_steps=30",
        ],
        "highway_dqn": [
            "dqn.train_freq=8",
            "dqn.gradient_steps=4",
            "dqn.learning_starts=16",
            "env.config.duration=8",
        ],
        "intersection_shared_dqn": [  # 2 envs x 2 cars: 4 streams into one buffer
            "dqn.train_freq=8",
            "dqn.gradient_steps=4",
            "dqn.learning_starts=16",
            "env.config.duration=8",
        ],
        "parking_sac_her": [  # 10-step episodes, so HER adds its copies within the segments
            "sac.train_freq=8",
            "sac.gradient_steps=4",
            "sac.learning_starts=16",
            "sac.buffer_size=2000",
            "sac.batch_size=32",
            "env.max_episode_steps=10",
        ],
    }[preset]
    base = ["model.hidden=[16]", "train.eval_episodes=2", "train.final_eval_episodes=2"]
    return cfg_of(preset, *small, *base, *overrides)


def params(run_dir) -> dict[str, torch.Tensor]:
    return checkpoint.read(run_dir, "last", with_state=False).model


ALGOS = {
    "cartpole_ppo": "PPO",
    "cartpole_dqn": "DQN",
    "cartpole_reinforce": "Reinforce",
    "highway_dqn": "DQN",  # highway-env in subprocesses (env.vector = "async")
    "pong_ppo": "PPO",  # ALE's vector env on its threads, the CNN in bf16 where the CPU has it
    "parking_sac_her": "SAC",  # continuous actions, HER copies in the buffer, async envs
    "intersection_shared_dqn": "DQN",  # two cars in each env, their returns kept apart
}


@pytest.mark.parametrize("preset", list(ALGOS))
def test_resume_is_exact(preset: str, tmp_path, monkeypatch) -> None:
    """8 updates straight == 5 updates, killed (so back to the checkpoint after update 4),
    resumed to 8: bit-identical weights (incl. DQN's target net), optimizer and replay buffer.
    A run is stopped by Ctrl-C at the start of an update (checkpoints every 2 updates)."""
    cfg = tiny(preset, "train.checkpoint_every=2", "train.total_steps=10000000")
    module = __import__(f"neuralab.rl.{cfg.algo}", fromlist=[ALGOS[preset]])
    cls = getattr(module, ALGOS[preset])
    original = cls.update

    def interrupt_at(limit: int):
        def update(self, update: int, env_steps: int) -> dict:
            if update == limit:
                raise KeyboardInterrupt
            return original(self, update, env_steps)

        monkeypatch.setattr(cls, "update", update)

    def last_update(run) -> int:
        return json.loads((run / "checkpoints/last/meta.json").read_text())["progress"]["update"]

    straight, broken = new_run_dir(tmp_path / "a", cfg), new_run_dir(tmp_path / "b", cfg)
    interrupt_at(8)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, straight, progress=False)
    interrupt_at(5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, broken, progress=False)
    assert last_update(broken) == 4
    interrupt_at(8)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, broken, resume=True, progress=False)
    assert last_update(straight) == last_update(broken) == 8
    a, b = checkpoint.read(straight, "last"), checkpoint.read(broken, "last")
    assert a.model.keys() == b.model.keys()
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    sa, sb = _tensors(a.state["algo"]), _tensors(b.state["algo"])
    assert len(sa) == len(sb) and all(torch.equal(x, y) for x, y in zip(sa, sb, strict=True))


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree.float()]
    if isinstance(tree, dict):
        return [t for k in sorted(tree, key=str) for t in _tensors(tree[k])]
    if isinstance(tree, list | tuple):
        return [t for v in tree for t in _tensors(v)]
    return [torch.tensor([float(tree)])] if isinstance(tree, int | float) else []


def test_seeded_runs_are_reproducible_and_seeds_differ(tmp_path) -> None:
    """Same config and seed: identical weights and metrics (but for the seconds things took);
    another seed: other weights."""
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = tiny("cartpole_ppo", "train.total_steps=256", f"seed={seed}")
        run = new_run_dir(tmp_path / name, cfg)
        train(cfg, run, progress=False)
        runs.append(run)
    a, b, c = (params(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    strip = [
        [
            {k: v for k, v in json.loads(line).items() if k != "wall_s" and "time/" not in k}
            for line in open(p)
        ]
        for p in (runs[0] / "metrics.jsonl", runs[1] / "metrics.jsonl")
    ]
    assert strip[0] == strip[1]


def test_short_ppo_run_on_cartpole_learns(tmp_path, one_thread) -> None:
    """The cartpole_ppo preset, cut to 64 updates (16k steps), already balances the pole for
    a greedy mean of >= 100 steps on 10 evaluation episodes (a random policy: about 22)."""
    cfg = cfg_of("cartpole_ppo", "train.total_steps=16384", "train.final_eval_episodes=10")
    run = new_run_dir(tmp_path / "r", cfg)
    results = train(cfg, run, progress=False)
    assert results["env/steps"] == 16384 and results["train/wall_s"] > 0
    assert results["eval/mean_return"] >= 100, results
    assert (run / "plots" / "returns.png").is_file()
    assert json.loads((run / "results.json").read_text()) == results


def test_evaluation_is_greedy_and_seeded() -> None:
    """The same agent scores the same on the fixed evaluation seeds, every time."""
    cfg = cfg_of("cartpole_ppo")
    torch.manual_seed(0)
    agent = PPO(cfg, 4, 2).agent
    first, second = evaluate(cfg, agent, 3), evaluate(cfg, agent, 3)
    assert first == second and first["episodes"] == 3


def test_sampled_evaluation_needs_a_policy_distribution() -> None:
    """REINFORCE's and PPO's policies can be sampled (seeded: the same scores twice); DQN's
    Q-values cannot, which is a one-line UserError."""
    for preset in ("cartpole_reinforce", "cartpole_ppo"):
        cfg = tiny(preset)
        agent = AGENTS[cfg.algo](4, 2, cfg)
        first, again = (evaluate(cfg, agent, 2, sampled=True) for _ in range(2))
        assert first == again and first["episodes"] == 2
    cfg = tiny("cartpole_dqn")
    with pytest.raises(UserError, match="no policy distribution"):
        evaluate(cfg, QAgent(4, 2, cfg), 2, sampled=True)


def test_a_finished_run_continues_with_more_steps(tmp_path) -> None:
    """A run that ended off a checkpoint boundary (update 3 of segments of 2) can be resumed
    with a larger train.total_steps: its envs are re-seeded and training goes on to the end."""
    cfg = tiny("cartpole_ppo", "train.checkpoint_every=2", "train.total_steps=96")
    run = new_run_dir(tmp_path / "r", cfg)
    assert train(cfg, run, progress=False)["train/updates"] == 3
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, total_steps=160))
    results = train(more, run, resume=True, progress=False)
    assert results["train/updates"] == 5 and results["env/steps"] == 160


def test_a_run_checkpointed_with_the_old_progress_names_resumes(tmp_path) -> None:
    """Checkpoints written before rl/ shared runs.Progress name its fields env_steps,
    best_return and best_env_steps; such a run still resumes, from the same place."""
    cfg = tiny("cartpole_ppo", "train.checkpoint_every=2", "train.total_steps=64")
    run = new_run_dir(tmp_path / "r", cfg)
    train(cfg, run, progress=False)
    meta_path = run / "checkpoints/last/meta.json"
    meta = json.loads(meta_path.read_text())
    new = meta["progress"]
    meta["progress"] = {
        "update": new["update"],
        "env_steps": new["step"],
        "wall_s": new["wall_s"],
        "best_return": new["best"],
        "best_env_steps": new["best_step"],
    }
    meta_path.write_text(json.dumps(meta))
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, total_steps=128))
    results = train(more, run, resume=True, progress=False)
    assert results["train/updates"] == 4 and results["env/steps"] == 128
