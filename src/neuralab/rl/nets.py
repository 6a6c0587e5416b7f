"""Pieces every algorithm shares: MLPs with CleanRL's initialisation (ego-attention for
tables of vehicles, the Nature CNN for stacked frames, one encoder per sensor to fuse
several), the precision, the optimizer, the learning-rate schedule and observation batches.

The schedule is the training loop's own (``neuralab.train.optim.lr_factor``, "linear" or
"constant"); the optimizer is not: see ``build_optimizer``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from neuralab.config import SchedConfig
from neuralab.errors import UserError
from neuralab.rl.config import NetConfig, RLOptimConfig
from neuralab.train.optim import lr_factor, set_lr

# optim.anneal_lr: linearly to 0 over the run (no warm-up, no floor), as CleanRL's PPO does
SCHEDULES = {
    True: SchedConfig(name="linear", warmup=0.0, min_lr=0.0),
    False: SchedConfig(name="constant"),
}


def mlp(in_dim: int, out_dim: int, cfg: NetConfig, out_std: float = 1.0) -> nn.Sequential:
    """Linear layers with ``cfg.hidden`` units; orthogonal init, gain sqrt(2) inside and
    ``out_std`` on the output (small for a policy, so it starts near uniform)."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[cfg.activation]
    sizes = [in_dim, *cfg.hidden]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [init_layer(nn.Linear(a, b), math.sqrt(2)), act()]
    layers.append(init_layer(nn.Linear(sizes[-1], out_dim), out_std))
    return nn.Sequential(*layers)


def network(
    obs_shape: int | tuple[int, ...], out_dim: int, cfg: NetConfig, out_std: float = 1.0
) -> nn.Module:
    """The configured network from observations of ``obs_shape`` (flattened when they reach
    it) to ``out_dim`` outputs: an ``mlp``, an ``EgoAttention`` over a (V, F) table, or a
    ``SensorFusion`` of several ``Sensors`` (an ``mlp`` on them all is early fusion). (PPO's
    ``ActorCritic`` builds the ``NatureCNN`` it shares between its heads itself.)"""
    if cfg.kind == "fusion":
        if not isinstance(obs_shape, Sensors):
            raise UserError(
                "model.kind=fusion encodes each sensor of a TupleObservation on its own; this "
                f"env observes one array of {tuple(np.atleast_1d(obs_shape))} (set "
                "env.config.observation to a TupleObservation)"
            )
        return SensorFusion(obs_shape, out_dim, cfg, out_std)
    shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
    if cfg.kind == "ego_attention":
        if len(shape) != 2:
            raise UserError(
                f"model.kind=ego_attention takes a table of vehicles (highway-env's Kinematics "
                f"observation, presence first); this env observes {shape}"
            )
        return EgoAttention(*shape, out_dim, cfg, out_std)
    return mlp(math.prod(shape), out_dim, cfg, out_std)


class NatureCNN(nn.Sequential):
    """The DQN paper's convolutional trunk (Mnih et al. 2015), as CleanRL's ``ppo_atari``
    builds it: (B, 4, 84, 84) uint8 frames scaled to [0, 1], 32 8x8 filters at stride 4, 64
    4x4 at stride 2, 64 3x3 at stride 1 (to 64 x 7 x 7), 512 ReLU units; orthogonal init
    with gain sqrt(2) and zero biases."""

    FEATURES = 512

    def __init__(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[1:] != (84, 84):
            raise UserError(
                f"model.kind=nature_cnn reads stacks of 84x84 frames (env.preprocess=atari); "
                f"this env observes {shape}"
            )
        gain = math.sqrt(2)
        super().__init__(
            init_layer(nn.Conv2d(shape[0], 32, 8, stride=4), gain), nn.ReLU(),
            init_layer(nn.Conv2d(32, 64, 4, stride=2), gain), nn.ReLU(),
            init_layer(nn.Conv2d(64, 64, 3, stride=1), gain), nn.ReLU(),
            nn.Flatten(),
            init_layer(nn.Linear(64 * 7 * 7, self.FEATURES), gain), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div(255.0).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class EgoAttention(nn.Module):
    """Ego-attention (Leurent & Mercat 2019, arXiv 1911.12250) over a table of V vehicles x F
    features whose first row is the ego vehicle and whose first feature is presence (0 for
    an empty row). Every row is embedded by one shared MLP; the ego's embedding is the
    query of each head, every present vehicle's (the ego's too) a key and a value; the heads'
    output, combined and averaged with the ego's embedding, goes through an MLP decoder.

    So the output does not depend on the order of the other vehicles nor on how many empty
    rows pad the table. ``last_attention`` keeps the latest (B, heads, V) weights (a probe).
    """

    def __init__(
        self, vehicles: int, features: int, out_dim: int, cfg: NetConfig, out_std: float = 1.0
    ) -> None:
        super().__init__()
        self.vehicles, self.features, self.heads = vehicles, features, cfg.heads
        d = cfg.embed
        self.embed = nn.Sequential(
            init_layer(nn.Linear(features, d), math.sqrt(2)), nn.ReLU(),
            init_layer(nn.Linear(d, d), math.sqrt(2)), nn.ReLU(),
        )  # fmt: skip
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.combine = nn.Linear(d, d)
        self.decoder = mlp(d, out_dim, cfg, out_std)
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = x.reshape(-1, self.vehicles, self.features)  # (B, V, F)
        b, h = table.shape[0], self.heads
        e = self.embed(table)  # (B, V, d)
        q = self.query(e[:, :1]).reshape(b, 1, h, -1).transpose(1, 2)  # (B, h, 1, d/h)
        k = self.key(e).reshape(b, self.vehicles, h, -1).transpose(1, 2)  # (B, h, V, d/h)
        v = self.value(e).reshape(b, self.vehicles, h, -1).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(k.shape[-1])  # (B, h, 1, V)
        present = table[:, :, 0] > 0.5
        present[:, 0] = True  # the ego attends at least to itself
        scores = scores.masked_fill(~present[:, None, None, :], float("-inf"))
        weights = scores.softmax(-1)
        self.last_attention = weights[:, :, 0].detach()
        attended = (weights @ v).transpose(1, 2).reshape(b, -1)  # (B, d)
        return self.decoder((self.combine(attended) + e[:, 0]) / 2)


class Sensors(tuple):
    """The shape of a fused observation: ``(total,)`` numbers, the flattened sensors of a
    highway-env TupleObservation one after another, with ``parts`` = (name, shape, scale)
    of each in order (scale: 1/255 for camera bytes, else 1)."""

    parts: tuple[tuple[str, tuple[int, ...], float], ...]

    def __new__(cls, parts) -> Sensors:
        parts = tuple((name, tuple(shape), float(scale)) for name, shape, scale in parts)
        sensors = super().__new__(cls, (sum(math.prod(shape) for _, shape, _ in parts),))
        sensors.parts = parts
        return sensors

    def slices(self) -> dict[str, slice]:
        """Where each sensor lies in the flat observation, by name."""
        out, start = {}, 0
        for name, shape, _ in self.parts:
            out[name] = slice(start, start + math.prod(shape))
            start += math.prod(shape)
        return out


def drop_sensors(x: torch.Tensor, sensors: Sensors, p: float) -> torch.Tensor:
    """Modality dropout (Neverova et al. 2016, "ModDrop") on a batch of flat fused observations
    (B, total): each row, with probability ``p``, has one of its sensors, drawn uniformly,
    read zero, as ``SensorFailure`` makes a failed sensor read at test time. Returns a new
    tensor; draws from torch's generator."""
    hit = torch.rand(x.shape[0]) < p  # (B,)
    which = torch.randint(len(sensors.parts), (x.shape[0],))  # (B,)
    keep = torch.ones_like(x)
    for i, part in enumerate(sensors.slices().values()):
        keep[hit & (which == i), part] = 0
    return x * keep


CNN_MIN = 256  # numbers: a 3-D sensor (grid, camera) at least this big gets a CNN, not an MLP


class SensorFusion(nn.Module):
    """Fusion of several sensors (issue 18): each sensor has its own encoder to ``cfg.embed``
    features -- ego-attention for a Kinematics table of vehicles (presence first), a small CNN
    for 3-D grids and camera frames of at least ``CNN_MIN`` numbers, an MLP for the rest
    (lidar, time-to-collision) -- and an MLP of ``cfg.hidden`` on their concatenation."""

    def __init__(self, sensors: Sensors, out_dim: int, cfg: NetConfig, out_std: float = 1.0):
        super().__init__()
        d, self.parts = cfg.embed, sensors.parts
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[cfg.activation]
        encoders: list[nn.Module] = []
        for name, shape, _ in self.parts:
            if name == "kinematics" and len(shape) == 2:
                encoder: nn.Module = EgoAttention(*shape, d, replace(cfg, hidden=()))
            elif len(shape) == 3 and math.prod(shape) >= CNN_MIN:
                encoder = nn.Sequential(
                    init_layer(nn.Conv2d(shape[0], 16, 3, padding=1), math.sqrt(2)), act(),
                    init_layer(nn.Conv2d(16, 32, 3, stride=2, padding=1), math.sqrt(2)), act(),
                    nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                    init_layer(nn.Linear(32 * 16, d), math.sqrt(2)), act(),
                )  # fmt: skip
            else:
                encoder = nn.Sequential(
                    nn.Flatten(), init_layer(nn.Linear(math.prod(shape), d), math.sqrt(2)), act()
                )
            encoders.append(encoder)
        self.encoders = nn.ModuleList(encoders)
        self.sizes = [math.prod(shape) for _, shape, _ in self.parts]
        self.head = mlp(d * len(self.parts), out_dim, cfg, out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        chunks = x.reshape(x.shape[0], -1).split(self.sizes, dim=1)
        for encoder, chunk, (_, shape, scale) in zip(
            self.encoders, chunks, self.parts, strict=True
        ):
            features.append(encoder(chunk.reshape(-1, *shape) * scale))
        return self.head(torch.cat(features, dim=1))


def init_layer(layer: nn.Module, std: float) -> nn.Module:
    """Orthogonal weights of gain ``std``, zero biases (CleanRL's ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def build_optimizer(params, cfg: RLOptimConfig) -> torch.optim.Optimizer:
    """Adam with eps 1e-5 (CleanRL) or RMSProp (pg-pong) on every parameter alike.

    Not ``neuralab.train.optim.build_optimizer``: that one makes fused AdamW (eps 1e-8) or
    SGD with weight-decay parameter groups; neither optimizer nor eps is RL's, and the
    checkpointed optimizer state would change shape with the groups.
    """
    if cfg.name == "rmsprop":  # pg-pong's update: cache = decay*cache + (1-decay)*g²
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.decay, eps=cfg.eps)
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps)


def anneal(
    optimizer: torch.optim.Optimizer, cfg: RLOptimConfig, env_steps: int, total_steps: int
) -> float:
    """Set the learning rate for a run ``env_steps`` of ``total_steps`` in; returns it."""
    lr = cfg.lr * lr_factor(SCHEDULES[cfg.anneal_lr], env_steps, total_steps)
    set_lr(optimizer, lr)
    return lr


def clip_and_step(
    optimizer: torch.optim.Optimizer, module: nn.Module, max_norm: float, *more: nn.Module
) -> None:
    """Clip the gradients of ``module`` (and ``more``, together) to ``max_norm``, then step."""
    if max_norm > 0:
        params = [p for m in (module, *more) for p in m.parameters()]
        nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()


def as_batch(obs: np.ndarray) -> torch.Tensor:
    """Observations as a tensor: stacks of uint8 frames (B, C, H, W) as they are (a quarter of
    float32's memory in a rollout; ``NatureCNN`` scales them), anything else (int8 Pong
    differences, float vectors) as float32."""
    obs = np.asarray(obs)
    if obs.dtype == np.uint8 and obs.ndim == 4:
        return torch.from_numpy(obs)
    return torch.as_tensor(obs, dtype=torch.float32)
