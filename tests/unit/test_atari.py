"""Atari from pixels (issue 26): ALE's vector env, the Nature CNN, PPO's bootstrapping, bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")

from neuralab.errors import UserError  # noqa: E402
from neuralab.rl import atari, ppo  # noqa: E402
from neuralab.rl import config as rl_config  # noqa: E402
from neuralab.rl.envs import make_vector_env, spaces  # noqa: E402
from neuralab.rl.evaluate import evaluate  # noqa: E402
from neuralab.rl.nets import NatureCNN  # noqa: E402
from neuralab.rl.ppo import PPO, ActorCritic  # noqa: E402
from neuralab.runs import autocast_dtype  # noqa: E402

SMALL = ["env.num_envs=2", "ppo.num_steps=12", "ppo.num_minibatches=2", "ppo.update_epochs=1"]


def cfg_of(*overrides: str) -> rl_config.RLConfig:
    return rl_config.load("pong_ppo", [*SMALL, *overrides])


def _gram(weight: torch.Tensor) -> torch.Tensor:
    rows = weight.detach().reshape(weight.shape[0], -1)
    return rows @ rows.T


def test_nature_cnn_shapes_and_orthogonal_init() -> None:
    """(B, 4, 84, 84) uint8 frames -> policy logits (B, 6) and values (B,) through 3 convs to
    64x7x7 = 3,136 features and 512 units; every layer's weight rows are orthogonal with gain
    sqrt(2) (W W^T = 2 I), the policy head's 0.01 and the value head's 1, biases zero."""
    torch.manual_seed(0)
    agent = ActorCritic((4, 84, 84), 6, cfg_of())
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    logits, values = agent(frames)
    assert logits.shape == (5, 6) and values.shape == (5,)
    layers = [m for m in agent.trunk if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in layers] == [
        (32, 4, 8, 8), (64, 32, 4, 4), (64, 64, 3, 3), (512, 3136),
    ]  # fmt: skip
    for layer, gain in [*((m, 2**0.5) for m in layers), (agent.actor, 0.01), (agent.critic, 1)]:
        eye = torch.eye(layer.weight.shape[0])
        torch.testing.assert_close(_gram(layer.weight), gain**2 * eye, atol=1e-5, rtol=1e-4)
        assert not layer.bias.any()
    with pytest.raises(UserError, match="84x84"):
        NatureCNN((6400,))


def test_frames_are_stacked_uint8_and_shift_by_one_per_step() -> None:
    """ALE's vector env observes (N, 4, 84, 84) uint8 stacks; after every step that does not
    end an episode, frames 1-3 of the old stack are frames 0-2 of the new one (the stack
    shifts by one), and the step that ends one (30-step games here) carries the old stack
    shifted in ``final_obs`` while returning the next game's first stack."""
    cfg = cfg_of("env.max_episode_steps=30")
    assert spaces(cfg.env) == ((4, 84, 84), 6)
    envs = make_vector_env(cfg.env)
    obs, _ = envs.reset(seed=3)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    rng, ends, moving = np.random.default_rng(0), 0, 0
    for _ in range(40):
        new, _, terminated, truncated, info = envs.step(rng.integers(0, 6, 2))
        for i in range(2):
            seen = info["final_obs"][i] if terminated[i] or truncated[i] else new[i]
            np.testing.assert_array_equal(seen[:3], obs[i][1:])
            moving += int((seen[3] != seen[2]).any())
            if truncated[i]:
                ends += 1
                assert not np.array_equal(new[i][:3], obs[i][1:])
        obs = new
    envs.close()
    assert ends == 2 and moving > 40  # each game cut at step 30; the picture does change


def test_truncated_games_are_bootstrapped_with_the_value_of_their_final_stack(
    monkeypatch,
) -> None:
    """At a time limit PPO adds gamma * V(final_obs) to the reward: with V = 7 everywhere,
    the rewards GAE sees on the step that cuts a 10-step game are 0.99 * 7 (no point is
    scored in 40 frames), and V was asked of the true last stacks (the shifted ones)."""
    cfg = cfg_of("env.max_episode_steps=10")
    algo = PPO(cfg, (4, 84, 84), 6)
    asked, seen = [], {}

    def value(x, dtype=None):
        asked.append(x.clone())
        return torch.full((len(x),), 7.0)

    def gae(rewards, values, dones, next_value, gamma, lam):
        seen.update(rewards=rewards.clone(), dones=dones.clone())
        return torch.zeros_like(rewards), torch.zeros_like(rewards)

    monkeypatch.setattr(algo.agent, "value", value)
    monkeypatch.setattr(ppo, "gae", gae)
    algo.reset(seed=0)
    algo.seconds = {"time/env_s": 0.0, "time/inference_s": 0.0}
    batch = algo._rollout()
    rewards, dones = seen["rewards"], seen["dones"]
    assert dones[9].tolist() == [1.0, 1.0] and dones.sum() == 2
    torch.testing.assert_close(rewards[9], torch.full((2,), 0.99 * 7.0))
    assert (rewards[:9] == 0).all() and (rewards[10:] == 0).all()
    final = asked[0]  # the bootstrap's call; the last call is the rollout's next value
    assert final.shape == (2, 4, 84, 84) and len(asked) == 2
    obs_step9 = batch["obs"].reshape(12, 2, 4, 84, 84)[9]
    assert torch.equal(final[:, :3], obs_step9[:, 1:])


def test_bf16_trunk_keeps_the_policy_close_and_the_heads_fp32() -> None:
    """The trunk under bf16 autocast gives logits and values within bf16's rounding of fp32's
    (the same weights), returned as fp32, so PPO's probability ratios start near 1."""
    torch.manual_seed(0)
    agent = ActorCritic((4, 84, 84), 6, cfg_of())
    torch.nn.init.normal_(agent.actor.weight, std=0.05)  # logits of a size that shows errors
    frames = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    logits, values = agent(frames)
    low_logits, low_values = agent(frames, torch.bfloat16)
    assert low_logits.dtype == low_values.dtype == torch.float32
    torch.testing.assert_close(low_logits, logits, atol=0.05, rtol=0.02)
    torch.testing.assert_close(low_values, values, atol=0.05, rtol=0.02)
    assert not torch.equal(low_logits, logits)  # it did run in bf16


def test_precision_auto_follows_the_cpus_bf16_arithmetic(monkeypatch) -> None:
    """auto: bf16 with AMX tiles or AVX512-BF16, fp32 without either; fp32 and bf16 as said
    (the one policy of training, attacks and RL)."""
    cpu = torch.device("cpu")
    for amx, avx512_bf16, expected in [
        (True, False, torch.bfloat16),
        (False, True, torch.bfloat16),
        (False, False, None),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert autocast_dtype("auto", cpu) is expected
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16


def test_evaluation_uses_fixed_seeds_and_sampling_leaves_the_global_rng_alone() -> None:
    """Greedy and sampled evaluations of 30-step games repeat exactly; sampling draws from
    its own generator, so the global RNG (which training's resume restores) does not move."""
    cfg = cfg_of("env.max_episode_steps=30")
    torch.manual_seed(0)
    agent = ActorCritic((4, 84, 84), 6, cfg)
    state = torch.get_rng_state()
    runs = [evaluate(cfg, agent, 3, sampled=s) for s in (False, False, True, True)]
    assert torch.equal(torch.get_rng_state(), state)
    assert runs[0] == runs[1] and runs[2] == runs[3]
    assert runs[0]["episodes"] == 3 and runs[0]["mean_length"] == 30


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["algo=dqn"], "built for algo=ppo only"),
        (["model.kind=mlp"], "go together"),
        (["env.id=CartPole-v1"], "takes an ALE id"),
        (["env.id=ALE/Pongg-v5"], "no ROM 'pongg'"),
        (["env.threads=-1"], "env.threads"),
    ],
)
def test_atari_mistakes_are_one_line_user_errors(overrides, fragment) -> None:
    with pytest.raises(UserError, match=fragment):
        spaces(cfg_of(*overrides).env)


def test_rom_names_of_ale_ids() -> None:
    assert atari.game("ALE/Pong-v5") == "pong"
    assert atari.game("ALE/MsPacman-v5") == "ms_pacman"
    assert atari.game("ALE/SpaceInvaders-v5") == "space_invaders"
