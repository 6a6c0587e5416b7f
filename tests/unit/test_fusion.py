"""Sensor fusion (issue 18): a highway-env TupleObservation flattened into one vector that
cuts back exactly into its sensors, one encoder per sensor, and sensors that fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("highway_env")

from neuralab.errors import UserError  # noqa: E402
from neuralab.rl import config as rl_config  # noqa: E402
from neuralab.rl.dqn import DQN  # noqa: E402
from neuralab.rl.envs import SensorFailure, make_env, sensors, spaces  # noqa: E402
from neuralab.rl.nets import (  # noqa: E402
    EgoAttention,
    SensorFusion,
    Sensors,
    drop_sensors,
    network,
)
from neuralab.rl.run import new_run_dir  # noqa: E402

CAMERA = {"type": "GrayscaleObservation", "observation_shape": [32, 16], "stack_size": 2,
          "weights": [0.2989, 0.587, 0.114]}  # fmt: skip
FUSED = {"type": "TupleObservation", "observation_configs": [
    {"type": "Kinematics"}, {"type": "OccupancyGrid"}, {"type": "LidarObservation"},
    {"type": "TimeToCollision"}, CAMERA]}  # fmt: skip


def cfg_of(*overrides: str) -> rl_config.RLConfig:
    return rl_config.load("highway_dqn", [f"env.config.observation={json.dumps(FUSED)}",
                                          "env.config.duration=5", *overrides])  # fmt: skip


def test_the_flat_observation_cuts_back_into_each_sensors_own_reading() -> None:
    """The oracle is highway-env's own TupleObservation: at every step, each sensor's slice of
    the flat vector equals that sensor's reading (observe() again on the same state),
    flattened; the camera's bytes get scale 1/255, the rest 1."""
    env = make_env(cfg_of().env)
    layout = sensors(env)
    names = ["kinematics", "occupancy_grid", "lidar", "time_to_collision", "camera"]
    assert [name for name, _, _ in layout.parts] == names
    assert layout.parts[4][1:] == ((2, 32, 16), 1 / 255) and layout.parts[0][2] == 1.0
    assert layout == (sum(np.prod(shape) for _, shape, _ in layout.parts),)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        readings = [sub.observe() for sub in env.unwrapped.observation_type.observation_types]
        for (name, shape, _), reading in zip(layout.parts, readings, strict=True):
            part = obs[layout.slices()[name]]
            if name != "camera":  # (a camera's observe() pushes a new frame onto its stack)
                np.testing.assert_array_equal(part, np.asarray(reading, np.float32).ravel())
            assert reading.shape == shape
        obs, *_ = env.step(1)
    assert spaces(cfg_of().env)[0].parts == layout.parts


def test_each_encoder_reads_its_own_sensor_and_nothing_else() -> None:
    """Changing one sensor's slice changes that sensor's encoder output only (so the cut is in
    the right places), with ego-attention for the vehicles, a CNN for the grid and camera and
    an MLP for lidar and time-to-collision; model.kind=mlp on the same vector is early fusion."""
    layout = Sensors([("kinematics", (5, 5), 1.0), ("occupancy_grid", (4, 11, 11), 1.0),
                      ("lidar", (16, 2), 1.0), ("camera", (2, 32, 16), 1 / 255)])  # fmt: skip
    cfg = cfg_of("model.kind=fusion").model
    torch.manual_seed(0)
    net = network(layout, 5, cfg)
    assert isinstance(net, SensorFusion) and isinstance(net.encoders[0], EgoAttention)
    kinds = [type(m).__name__ for m in net.encoders[1].modules()]
    assert "Conv2d" in kinds and "Conv2d" not in [
        type(m).__name__ for m in net.encoders[2].modules()
    ]
    x = torch.rand(3, layout[0])
    x[:, 0] = 1.0  # the ego is present
    features = {}
    for i, encoder in enumerate(net.encoders):
        encoder.register_forward_hook(lambda m, a, out, i=i: features.__setitem__(i, out))
    net(x)
    before = dict(features)
    for j, part in enumerate(layout.slices().values()):
        y = x.clone()
        y[:, part] += 0.5
        net(y)
        for i in range(len(net.encoders)):
            assert torch.equal(features[i], before[i]) == (i != j), (i, j)
    early = network(layout, 5, rl_config.load("highway_dqn").model)
    assert early(x).shape == (3, 5) and not isinstance(early, SensorFusion)


def test_failed_sensors_read_zero_and_the_rest_is_untouched() -> None:
    env = make_env(cfg_of().env)
    broken = SensorFailure(make_env(cfg_of().env), ["lidar", "camera"])
    obs, _ = env.reset(seed=3)
    cut, _ = broken.reset(seed=3)
    parts = sensors(env).slices()
    for name, part in parts.items():
        if name in ("lidar", "camera"):
            assert not cut[part].any() and obs[part].any()
        else:
            np.testing.assert_array_equal(cut[part], obs[part])
    with pytest.raises(UserError, match="no sensor 'radar' to fail .*its sensors: kinematics"):
        SensorFailure(env, ["radar"])
    with pytest.raises(UserError, match="it observes one array"):
        SensorFailure(make_env(rl_config.load("highway_dqn").env), ["lidar"])


def test_fusion_needs_sensors_before_any_run_directory(tmp_path) -> None:
    with pytest.raises(UserError, match="model.kind=fusion encodes each sensor"):
        new_run_dir(tmp_path / "r", rl_config.load("highway_dqn", ["model.kind=fusion"]))
    assert not (tmp_path / "r").exists()


def test_sensor_dropout_makes_one_whole_sensor_read_as_a_failed_one() -> None:
    """The oracle is SensorFailure, the test-time failure the dropout trains for: each row of
    the batch comes back unchanged or exactly as SensorFailure would make it with one sensor
    failed; about p of the rows lose one, each sensor about equally often; p=0 is the identity."""
    env = make_env(cfg_of().env)
    layout = sensors(env)
    names = [name for name, _, _ in layout.parts]
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        obs, *_ = env.step(3)  # past the first step, so every sensor reads something
    failed = {name: SensorFailure(env, [name]).observation(obs) for name in names}
    assert all((failed[name] != obs).any() for name in names)
    torch.manual_seed(0)
    x = torch.as_tensor(obs).repeat(2000, 1)
    dropped = drop_sensors(x, layout, 0.3)
    lost = []
    for row in dropped.numpy():
        matches = [name for name in names if np.array_equal(row, failed[name])]
        assert matches or np.array_equal(row, obs)
        lost += matches
    assert abs(len(lost) / 2000 - 0.3) < 0.04
    counts = [lost.count(name) for name in names]
    assert min(counts) > 0.6 * len(lost) / len(names) and max(counts) < 1.4 * len(lost) / len(names)
    assert torch.equal(drop_sensors(x, layout, 0.0), x) and torch.equal(x[0], torch.as_tensor(obs))


def test_dqn_drops_sensors_for_the_online_q_only_and_checks_its_config() -> None:
    """With dqn.sensor_dropout the online Q-network learns from replayed observations that
    lost a sensor while the TD target (online and target networks on the next observation)
    sees every sensor; the option needs a fused observation and a probability below 1."""
    cfg = cfg_of("model.kind=fusion", "dqn.sensor_dropout=0.9", "env.num_envs=1",
                 "env.vector=sync", "dqn.learning_starts=1", "dqn.train_freq=4",
                 "dqn.gradient_steps=1", "dqn.batch_size=64")  # fmt: skip
    torch.manual_seed(0)
    dqn = DQN(cfg, *spaces(cfg.env))
    dqn.reset(seed=0)
    seen: dict[str, list[torch.Tensor]] = {"q": [], "target": []}
    for name in seen:
        getattr(dqn.agent, name).register_forward_hook(
            lambda m, args, out, name=name: seen[name].append(args[0].clone())
        )
    dqn.update(0, 0)
    *acting, chooser, online = seen["q"]  # Double DQN: the online net picks a* on s', then Q(s, a)
    data, n = dqn.buffer.data, dqn.buffer.pos
    assert len(acting) == 4 and len(seen["target"]) == 1  # 4 env steps, one gradient step
    assert torch.equal(chooser, seen["target"][0])
    parts = list(dqn.obs_shape.slices().values())

    def origin(row: torch.Tensor, pool: torch.Tensor) -> int | None:
        """-1 if ``row`` is one of ``pool``'s rows as it was, i if it is one with sensor i
        zeroed, None if neither."""
        for b in pool:
            if torch.equal(row, b):
                return -1
            for i, part in enumerate(parts):
                if torch.equal(row[part], torch.zeros_like(row[part])) and torch.equal(
                    torch.cat([row[: part.start], row[part.stop :]]),
                    torch.cat([b[: part.start], b[part.stop :]]),
                ):
                    return i
        return None

    assert all(origin(row, data["next_obs"][:n]) == -1 for row in chooser)  # every sensor
    origins = [origin(row, data["obs"][:n]) for row in online]
    assert None not in origins
    assert sum(o != -1 for o in origins) > 0.7 * len(online)  # about 90% lost a sensor
    for bad, message in (("dqn.sensor_dropout=1", r"must be in \[0, 1\)"),
                         ("model.kind=mlp", "needs model.kind=fusion")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            cfg_of("model.kind=fusion", "dqn.sensor_dropout=0.5", bad)
