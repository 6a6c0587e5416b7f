"""``neuralab rl`` on highway-env as a user runs it: train a driving preset for a few hundred
steps, resume it exactly, evaluate it with the driving metrics and a GIF, score the scripted
drivers, and refuse bad input with one line."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_cli import assert_user_error, neuralab

pytest.importorskip("highway_env")

SHORT = ["env.config.duration=8", "train.eval_episodes=2", "train.final_eval_episodes=2"]
DRIVING_KEYS = {"mean_return", "std_return", "crash_rate", "mean_speed", "success_rate", "episodes"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """highway_dqn for 320 steps (20 updates of 2 envs x 8 steps; checkpoints every 5)."""
    cwd = tmp_path_factory.mktemp("driving")
    args = ["train.total_steps=320", "train.checkpoint_every=5", *SHORT]
    proc = neuralab("rl", "train", "highway_dqn", *args, "--run-dir", "runs/d", "--json", cwd=cwd)
    return cwd, json.loads(proc.stdout)


def test_train_reports_driving_metrics_and_plots_them(run) -> None:
    """The results hold the greedy crash rate and speed; the run has the driving curve."""
    cwd, results = run
    assert results["env/steps"] == 320
    assert 0 <= results["eval/crash_rate"] <= 1 and results["eval/mean_speed"] > 0
    assert results["eval/success_rate"] is None  # the highway has no goal
    assert (cwd / "runs/d/plots/driving.png").is_file()
    records = [json.loads(x) for x in (cwd / "runs/d/metrics.jsonl").read_text().splitlines()]
    assert sum("eval/crash_rate" in r for r in records) == 4


def test_highway_ppo_trains_through_the_cli(tmp_path) -> None:
    """The PPO preset, on its four subprocess envs, for two short rollouts."""
    args = ["train.total_steps=128", "ppo.num_steps=16", "ppo.num_minibatches=2", *SHORT]
    proc = neuralab("rl", "train", "highway_ppo", *args, "--run-dir", "p", "--json", cwd=tmp_path)
    results = json.loads(proc.stdout)
    assert results["env/steps"] == 128 and 0 <= results["eval/crash_rate"] <= 1


@pytest.mark.parametrize("preset", ["intersection_attention_dqn", "intersection_mlp_dqn"])
def test_intersection_presets_train_through_the_cli(preset: str, tmp_path) -> None:
    """Ego-attention and its MLP baseline at the intersection, for a few updates: the results
    have the success rate the intersection's goal gives; rl attention draws the attention
    policy's weights over the other cars, and refuses the MLP's."""
    args = ["train.total_steps=48", "dqn.learning_starts=16", "train.checkpoint_every=3"]
    short = ["train.eval_episodes=1", "train.final_eval_episodes=2"]
    proc = neuralab("rl", "train", preset, *args, *short, "--run-dir", "i", "--json", cwd=tmp_path)
    results = json.loads(proc.stdout)
    assert results["env/steps"] == 48 and 0 <= results["eval/success_rate"] <= 1
    plot = neuralab("rl", "attention", "i", "--frames", "2", "--out", "a.png", cwd=tmp_path,
                    check=False)  # fmt: skip
    if preset == "intersection_attention_dqn":  # where the policy looks, drawn on the road
        assert plot.returncode == 0 and (tmp_path / "a.png").is_file(), plot.stderr
    else:
        assert_user_error(plot, "has no ego-attention")


def test_two_cars_share_a_policy_through_the_cli(tmp_path) -> None:
    """intersection_shared_dqn for a few updates: env steps count the simulators' steps (the
    buffer holds one transition per car); rl eval --json scores 2 episodes of 2 cars, and
    --gif draws them; rl attention draws the first car's; the scripted drivers' table says it
    drove 2 cars."""
    args = ["train.total_steps=48", "dqn.learning_starts=16", "train.checkpoint_every=3"]
    short = ["train.eval_episodes=1", "train.final_eval_episodes=2"]
    proc = neuralab("rl", "train", "intersection_shared_dqn", *args, *short, "--run-dir", "s",
                    cwd=tmp_path)  # fmt: skip
    assert "48 env steps" in proc.stdout and "over 2 episodes of 2 vehicles" in proc.stdout
    proc = neuralab("rl", "eval", "s", "--episodes", "2", "--json", "--gif", "two.gif",
                    cwd=tmp_path)  # fmt: skip
    result = json.loads(proc.stdout)
    assert DRIVING_KEYS <= set(result) and result["episodes"] == 2 and result["vehicles"] == 2
    assert (tmp_path / "two.gif").is_file()
    neuralab("rl", "attention", "s", "--frames", "2", "--out", "a.png", cwd=tmp_path)
    assert (tmp_path / "a.png").is_file()
    proc = neuralab("rl", "baselines", "intersection_shared_dqn", "--episodes", "1", "--drivers",
                    "idle,rules", cwd=tmp_path)  # fmt: skip
    assert "(1 episodes of 2 vehicles each" in proc.stdout


def test_parking_sac_her_trains_evaluates_and_draws_through_the_cli(tmp_path) -> None:
    """SAC + HER in the parking lot for 240 steps (10-step episodes, so HER relabels): the
    results and rl eval --json (greedy and sampled) have a success rate, --gif draws it."""
    args = ["train.total_steps=240", "train.checkpoint_every=2", "env.max_episode_steps=10"]
    small = ["sac.learning_starts=40", "sac.train_freq=20", "sac.gradient_steps=5"]
    short = ["train.eval_episodes=2", "train.final_eval_episodes=2", "model.hidden=[32]"]
    proc = neuralab("rl", "train", "parking_sac_her", *args, *small, *short, "--run-dir", "s",
                    "--json", cwd=tmp_path)  # fmt: skip
    results = json.loads(proc.stdout)
    assert results["env/steps"] == 240 and 0 <= results["eval/success_rate"] <= 1
    for extra in ([], ["--sampled"]):
        out = neuralab("rl", "eval", "s", "--episodes", "2", *extra, "--json", cwd=tmp_path)
        result = json.loads(out.stdout)
        assert DRIVING_KEYS <= result.keys() and result["success_rate"] is not None
    neuralab("rl", "eval", "s", "--episodes", "1", "--gif", "p.gif", cwd=tmp_path)
    with Image.open(tmp_path / "p.gif") as gif:
        assert gif.n_frames > 3
    proc = neuralab("rl", "baselines", "parking_sac_her", "--episodes", "2", "--json", cwd=tmp_path)
    out = json.loads(proc.stdout)  # the meta-action drivers cannot steer continuously
    assert list(out) == ["random", "idle"] and out["idle"]["success_rate"] == 0


def test_eval_json_has_the_driving_keys_and_gif(run) -> None:
    """rl eval --json: the contract's keys; --gif: an animated GIF of a driving episode."""
    cwd, _ = run
    out = neuralab("rl", "eval", "runs/d", "--episodes", "3", "--gif", "d.gif", "--json", cwd=cwd)
    result = json.loads(out.stdout)
    assert DRIVING_KEYS <= result.keys() and result["episodes"] == 3
    with Image.open(cwd / "d.gif") as gif:
        assert gif.n_frames > 3
    table = neuralab("rl", "eval", "runs/d", "--episodes", "2", cwd=cwd).stdout
    assert "crash rate" in table and "speed m/s" in table


def test_fusion_preset_trains_and_drives_with_failed_sensors(tmp_path) -> None:
    """highway_fusion_dqn (four sensors, one encoder each) for a few updates through the CLI,
    with sensor dropout; rl eval --fail-sensor scores it with the lidar and camera reading
    zero, names them, and its GIF is that same episode; a sensor the run does not have is a
    one-line error."""
    args = ["train.total_steps=48", "train.checkpoint_every=2", "dqn.learning_starts=16",
            "env.config.duration=4", "train.eval_episodes=1",
            "train.final_eval_episodes=1", "dqn.sensor_dropout=0.5"]  # fmt: skip
    neuralab("rl", "train", "highway_fusion_dqn", *args, "--run-dir", "f", cwd=tmp_path)
    proc = neuralab("rl", "eval", "f", "--episodes", "1", "--fail-sensor", "lidar,camera",
                    "--gif", "f.gif", "--json", cwd=tmp_path)  # fmt: skip
    result = json.loads(proc.stdout)
    assert DRIVING_KEYS <= result.keys() and result["failed_sensors"] == ["lidar", "camera"]
    assert result["gif_return"] == pytest.approx(result["mean_return"])  # the same episode
    proc = neuralab("rl", "eval", "f", "--fail-sensor", "radar", cwd=tmp_path, check=False)
    assert_user_error(proc, "no sensor 'radar' to fail in highway-fast-v0 (its sensors: kinem")


def test_baselines_json_has_each_scripted_driver(tmp_path) -> None:
    """rl baselines ENV --json: {random, idle, slower, rules}, each with the eval keys."""
    proc = neuralab("rl", "baselines", "highway-fast-v0", "env.config.duration=4",
                    "--episodes", "2", "--json", cwd=tmp_path)  # fmt: skip
    out = json.loads(proc.stdout)
    assert list(out) == ["random", "idle", "slower", "rules"]
    assert all(DRIVING_KEYS <= row.keys() for row in out.values())


def test_baselines_drive_the_planner_on_request_in_workers(tmp_path) -> None:
    """--drivers planner (not among the defaults: it thinks for ~0.1-1 s a decision) with a
    --budget and --workers; the table shows each driver's time per decision; --gif draws the
    driver's first episode."""

    def baselines(normalize: str, *options: str, check: bool = True):
        return neuralab("rl", "baselines", "intersection-v0", "env.config.duration=3",
                        f"env.config.normalize_reward={normalize}", "--drivers", "planner,idle",
                        "--episodes", "2", *options, cwd=tmp_path, check=check)  # fmt: skip

    out = json.loads(baselines("true", "--budget", "5", "--workers", "2", "--json").stdout)
    assert list(out) == ["planner", "idle"] and out["planner"]["episodes"] == 2
    assert all(DRIVING_KEYS | {"decision_ms"} <= row.keys() for row in out.values())
    for normalize, options, message in (
        ("false", (), "normalize_reward=true"),
        ("true", ("--gif", "two.gif"), "--gif shows one driver"),
    ):
        assert_user_error(baselines(normalize, *options, check=False), message)
    proc = neuralab("rl", "baselines", "highway-fast-v0", "env.config.duration=3", "--drivers",
                    "planner", "--budget", "5", "--episodes", "1", "--gif", "p.gif",
                    cwd=tmp_path)  # fmt: skip
    assert "ms/decision" in proc.stdout and "gif: p.gif" in proc.stdout
    with Image.open(tmp_path / "p.gif") as gif:
        assert gif.n_frames == 4  # the start and one frame per decision


def test_driving_mistakes_exit_2_with_one_line(tmp_path) -> None:
    """An unknown env id, a misspelt highway-env key, an observation the networks cannot take,
    continuous actions for DQN, and scripted drivers on a non-driving env."""
    cases = {
        ("env.id=highway-fats-v0",): "cannot make environment 'highway-fats-v0'",
        ("env.config.lane_count=2",): "unknown highway-env config key 'env.config.lane_count'",
        ("model.kind=fusion",): "model.kind=fusion encodes each sensor",
        ("env.id=racetrack-v0",): "unknown highway-env config key 'env.config.vehicles_count'",
        ("env.id=racetrack-v0", "env.config={}"): "picks discrete ones (use algo=sac)",
    }
    for overrides, message in cases.items():
        proc = neuralab("rl", "train", "highway_dqn", *overrides, cwd=tmp_path, check=False)
        assert_user_error(proc, message)
    proc = neuralab("rl", "baselines", "CartPole-v1", cwd=tmp_path, check=False)
    assert_user_error(proc, "not one of them")
    assert not (tmp_path / "runs").exists()  # no run directory for a run that cannot start
