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
from neuralab.rl.envs import SensorFailure, make_env, sensors, spaces  # noqa: E402
from neuralab.rl.nets import EgoAttention, SensorFusion, Sensors, network  # noqa: E402
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
