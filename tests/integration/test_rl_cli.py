"""``neuralab rl`` end to end, as a user runs it: separate processes, exit codes, files."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_cli import assert_user_error, neuralab

pytest.importorskip("gymnasium")

TINY = ["train.total_steps=2048", "train.eval_episodes=2", "train.checkpoint_every=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short PPO run on CartPole, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("rl")
    proc = neuralab("rl", "train", "cartpole_ppo", *TINY, "--run-dir", "runs/p", "--json", cwd=cwd)
    return cwd, json.loads(proc.stdout)


def test_train_writes_a_complete_run_directory(run) -> None:
    """--json prints one object; the run holds its config, metrics, checkpoints, curve, results."""
    cwd, results = run
    run_dir = cwd / "runs" / "p"
    assert results["env/steps"] == 2048 and results["train/wall_s"] > 0
    assert json.loads((run_dir / "results.json").read_text())["env/steps"] == 2048
    for name in ("config.toml", "metrics.jsonl", "plots/returns.png", "checkpoints/last/meta.json"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "checkpoints/best/model.safetensors").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/mean_return" in r for r in records) and "ppo/approx_kl" in records[0]


def test_eval_json_prints_one_object_and_writes_a_gif(run) -> None:
    """rl eval --json: one JSON object with mean_return, std_return and episodes; --gif an
    animated GIF of one greedy episode."""
    cwd, _ = run
    proc = neuralab("rl", "eval", "runs/p", "--episodes", "3", "--gif", "ep.gif", "--json", cwd=cwd)
    out = json.loads(proc.stdout)
    assert out["episodes"] == 3 and {"mean_return", "std_return"} <= out.keys()
    with Image.open(cwd / "ep.gif") as gif:
        assert gif.n_frames > 5


def test_user_mistakes_exit_2_with_one_line(run) -> None:
    """A bad config key, an existing run directory, a finished run to resume, a missing run
    and an unknown environment: exit status 2 and one line saying what to do."""
    cwd, _ = run
    bad = neuralab("rl", "train", "cartpole_ppo", "ppo.gama=0.9", cwd=cwd, check=False)
    assert_user_error(bad, "unknown config key 'ppo.gama'")
    again = neuralab("rl", "train", "cartpole_ppo", "--run-dir", "runs/p", cwd=cwd, check=False)
    assert_user_error(again, "already exists")
    done = neuralab("rl", "train", "--resume", "runs/p", cwd=cwd, check=False)
    assert_user_error(done, "nothing to resume")
    missing = neuralab("rl", "eval", "runs/nope", cwd=cwd, check=False)
    assert_user_error(missing, "not a run directory")
    env = neuralab("rl", "train", "cartpole_ppo", "env.id=CartPol-v1", cwd=cwd, check=False)
    assert_user_error(env, "cannot make environment 'CartPol-v1'")


def test_pong_ppo_trains_from_pixels_and_evaluates(tmp_path) -> None:
    """pong_ppo through the CLI for 256 steps of 30-step games (issue 26): a run directory
    with the time split in its metrics, then rl eval greedy with a GIF of the 84x84 frames
    the agent saw (3x larger), and sampled."""
    pytest.importorskip("ale_py")
    small = ["env.num_envs=2", "ppo.num_steps=64", "ppo.num_minibatches=2", "ppo.update_epochs=1"]
    short = ["env.max_episode_steps=30", "train.total_steps=256", "train.checkpoint_every=2"]
    proc = neuralab(
        "rl", "train", "pong_ppo", *small, *short, "train.eval_episodes=2",
        "train.final_eval_episodes=2", "--run-dir", "pong", "--json", cwd=tmp_path,
    )  # fmt: skip
    results = json.loads(proc.stdout)
    assert results["env/steps"] == 256 and results["eval/mean_length"] == 30
    records = [json.loads(line) for line in (tmp_path / "pong/metrics.jsonl").open()]
    assert all(r["time/learn_s"] > 0 and r["time/env_s"] > 0 for r in records)
    greedy = neuralab(
        "rl", "eval", "pong", "--episodes", "2", "--gif", "pong.gif", "--json", cwd=tmp_path
    )
    out = json.loads(greedy.stdout)
    assert out["policy"] == "greedy" and out["episodes"] == 2 and out["gif_length"] == 30
    with Image.open(tmp_path / "pong.gif") as gif:  # (identical frames are merged)
        assert gif.size == (252, 252) and gif.n_frames > 5
    sampled = neuralab("rl", "eval", "pong", "--episodes", "2", "--sampled", cwd=tmp_path)
    assert "over 2 sampled episodes" in sampled.stdout
