"""Reinforcement-learning run configuration: one frozen dataclass per section.

The same rules as supervised runs (``neuralab.config``): defaults < TOML file <
``a.b=c`` overrides, every key checked, the resolved config saved as
``config.toml`` in the run directory. ``algo`` picks the algorithm; only its own
section (``[ppo]``, ``[dqn]`` or ``[reinforce]``) is written to the run's config.

Reading, coercing, checking and writing go through ``neuralab.config``'s machinery; only
the sections are RL's own, because a run here is measured in environment steps and
updates, not epochs of a dataset, and its optimizers are Adam and RMSProp with their own
eps (CleanRL's and pg-pong's), not AdamW/SGD with weight-decay groups.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuralab import config as config_lib
from neuralab.config import choices
from neuralab.errors import UserError

ALGOS = ("reinforce", "ppo", "dqn", "sac")
CONTINUOUS = ("sac",)  # the algorithms for continuous actions; the others take discrete ones


@dataclass(frozen=True)
class EnvConfig:
    id: str = "CartPole-v1"  # any Gymnasium or highway-env id (continuous actions: algo=sac)
    num_envs: int = 4  # vector envs (reinforce: episodes per update)
    # sync: stepped in this process; async: each in a subprocess (pays for slow simulators)
    vector: str = field(default="sync", metadata=choices("sync", "async"))
    # highway-env's own config dict ([env.config] in TOML, env.config.KEY=VALUE on the
    # command line), e.g. vehicles_count, duration, observation = {type = "OccupancyGrid"}
    config: dict[str, Any] = field(default_factory=dict)
    # pong: pg-pong's frame differences; atari: ALE's vector env with the standard
    # preprocessing (4 stacked 84x84 grayscale frames, see neuralab.rl.atari)
    preprocess: str = field(default="none", metadata=choices("none", "pong", "atari"))
    threads: int = 0  # atari: the emulators' C++ threads (0 = one per core)
    episodic_life: bool = False  # atari: a lost life ends a training episode
    actions: tuple[int, ...] = ()  # a subset of the env's actions, e.g. [2, 3]; () = all
    max_episode_steps: int = 0  # 0 = the env's own time limit


@dataclass(frozen=True)
class NetConfig:
    # mlp: on the flat observation; ego_attention: the ego vehicle's query attends over the
    # other vehicles of a highway-env Kinematics table (Leurent & Mercat 2019), then an MLP;
    # nature_cnn: Mnih et al.'s 3 convolutions + 512 units on stacked frames (env.preprocess=atari);
    # fusion: one encoder per sensor of a highway-env TupleObservation, then an MLP
    kind: str = field(
        default="mlp", metadata=choices("mlp", "ego_attention", "nature_cnn", "fusion")
    )
    hidden: tuple[int, ...] = (64, 64)  # the MLP's layers (ego_attention: its decoder's)
    activation: str = field(default="tanh", metadata=choices("tanh", "relu"))
    # ego_attention: each vehicle's embedding and the attention's width; fusion: each sensor's
    embed: int = 64
    heads: int = 2  # ego_attention: attention heads (must divide embed)


@dataclass(frozen=True)
class RLTrainConfig:
    """The run's length in environment steps, and when it evaluates and checkpoints."""

    total_steps: int = 100_000  # environment steps (summed over the vector envs)
    threads: int = 1  # torch CPU threads; 1 is fastest for small MLPs
    # ppo: autocast of the networks' trunk; auto = bf16 where the CPU computes in bf16 (AMX
    # tiles or AVX512-BF16) or on a GPU that does, else fp32; the heads stay fp32
    precision: str = field(default="auto", metadata=choices("auto", "fp32", "bf16"))
    checkpoint_every: int = 20  # updates between checkpoints (envs are re-seeded there)
    eval_episodes: int = 10  # greedy evaluation at each checkpoint; 0 = none
    final_eval_episodes: int = 20  # greedy evaluation of the last weights


@dataclass(frozen=True)
class RLOptimConfig:
    """Adam (PPO, DQN) or RMSProp (pg-pong), an lr annealed linearly, gradient clipping."""

    name: str = field(default="adam", metadata=choices("adam", "rmsprop"))
    lr: float = 2.5e-4
    eps: float = 1e-5
    decay: float = 0.99  # RMSProp's moving-average decay (torch's alpha)
    anneal_lr: bool = True  # linearly to 0 over the run
    max_grad_norm: float = 0.5  # 0 = no clipping


@dataclass(frozen=True)
class PPOConfig:
    num_steps: int = 128  # steps per env per rollout
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    norm_adv: bool = True


@dataclass(frozen=True)
class DQNConfig:
    buffer_size: int = 50_000
    batch_size: int = 64
    gamma: float = 0.99
    learning_starts: int = 1000  # env steps of random play before learning
    train_freq: int = 256  # steps per env between updates
    gradient_steps: int = 128  # gradient steps per update
    target_every: int = 1  # updates between hard copies into the target network
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.2  # of total_steps, to anneal epsilon linearly
    double: bool = True  # Double DQN: online net picks, target net values
    # model.kind=fusion: the chance that a replayed observation loses one of its sensors, drawn
    # uniformly (it reads zero, as a failed one does), in the online Q-network's forward only;
    # the TD target still sees every sensor (modality dropout: Neverova et al. 2016, ModDrop)
    sensor_dropout: float = 0.0


@dataclass(frozen=True)
class SACConfig:
    """Soft actor-critic (Haarnoja et al. 2018) with a learned temperature, and HER."""

    buffer_size: int = 1_000_000
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005  # Polyak averaging of the target critics
    learning_starts: int = 1000  # env steps of uniformly random actions before learning
    train_freq: int = 50  # steps per env between learning phases
    gradient_steps: int = 100  # gradient steps per learning phase
    alpha: float = 0.2  # the entropy temperature (its start, when learned)
    autotune: bool = True  # learn alpha so the policy's entropy tracks the target
    target_entropy: float = -1.0  # per action dimension (-1: the usual -dim(A))
    her_k: int = 0  # HER: relabelled copies of each transition, goals from its future (0: off)


@dataclass(frozen=True)
class ReinforceConfig:
    gamma: float = 0.99
    # value: a learned state-value baseline; normalize: standardised returns (pg-pong)
    baseline: str = field(default="value", metadata=choices("value", "normalize"))
    reset_on_reward: bool = False  # Pong: every point (nonzero reward) ends a return
    vf_coef: float = 0.5
    # mean: the loss averages over the batch's steps; sum: adds them up, as pg-pong's gradient
    # does (it matters to RMSProp, whose eps is then small beside the gradient's scale)
    reduction: str = field(default="mean", metadata=choices("mean", "sum"))


@dataclass(frozen=True)
class RLConfig:
    seed: int = 0
    algo: str = "ppo"
    env: EnvConfig = field(default_factory=EnvConfig)
    model: NetConfig = field(default_factory=NetConfig)
    train: RLTrainConfig = field(default_factory=RLTrainConfig)
    optim: RLOptimConfig = field(default_factory=RLOptimConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)


_SECTIONS = {
    "env": EnvConfig,
    "model": NetConfig,
    "train": RLTrainConfig,
    "optim": RLOptimConfig,
    "ppo": PPOConfig,
    "dqn": DQNConfig,
    "sac": SACConfig,
    "reinforce": ReinforceConfig,
}


def build(values: dict[str, Any]) -> RLConfig:
    """A validated ``RLConfig`` from a nested dict (as read from TOML)."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "seed":
            kwargs["seed"] = config_lib.coerce("seed", value, int)
        elif key == "algo":
            kwargs["algo"] = config_lib.coerce("algo", value, str)
            if kwargs["algo"] not in ALGOS:
                raise UserError(
                    f"config key 'algo' must be one of {', '.join(ALGOS)}; got {value!r}"
                )
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"config key {key!r} must be a [{key}] section")
            cls = _SECTIONS[key]
            value, extra = dict(value), {}
            if key == "env" and "config" in value:
                extra["config"] = _env_config(value.pop("config"))
                if not isinstance(extra["config"], dict):
                    raise UserError(
                        "config key 'env.config' must be a table of highway-env settings, "
                        "e.g. env.config.duration=20"
                    )
            kwargs[key] = cls(**config_lib.section_values(key, cls, value), **extra)
        else:
            valid = ", ".join(["seed", "algo", *_SECTIONS])
            raise UserError(f"unknown config key {key!r}; valid top-level keys: {valid}")
    cfg = RLConfig(**kwargs)
    _check(cfg)
    return cfg


def _env_config(value: Any) -> Any:
    """highway-env's config table, its ``key=value`` strings read as JSON where they parse
    (``20``, ``true``, ``[20, 30]``) and kept as strings where not (``OccupancyGrid``)."""
    if isinstance(value, dict):
        return {k: _env_config(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _check(cfg: RLConfig) -> None:
    positive = {
        "env.num_envs": cfg.env.num_envs,
        "train.total_steps": cfg.train.total_steps,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "ppo.num_steps": cfg.ppo.num_steps,
        "ppo.num_minibatches": cfg.ppo.num_minibatches,
        "dqn.batch_size": cfg.dqn.batch_size,
        "dqn.buffer_size": cfg.dqn.buffer_size,
        "dqn.train_freq": cfg.dqn.train_freq,
        "dqn.target_every": cfg.dqn.target_every,
        "sac.buffer_size": cfg.sac.buffer_size,
        "sac.batch_size": cfg.sac.batch_size,
        "sac.train_freq": cfg.sac.train_freq,
        "sac.alpha": cfg.sac.alpha,
        "optim.lr": cfg.optim.lr,
        "model.embed": cfg.model.embed,
        "model.heads": cfg.model.heads,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"config key {key!r} must be positive, got {value!r}")
    if cfg.env.threads < 0:
        raise UserError(
            f"config key 'env.threads' must be 0 (one per core) or more, got {cfg.env.threads}"
        )
    if not 0 < cfg.sac.tau <= 1:
        raise UserError(f"config key 'sac.tau' must be in (0, 1], got {cfg.sac.tau}")
    if cfg.sac.her_k < 0 or cfg.sac.gradient_steps < 0:
        raise UserError("config keys 'sac.her_k' and 'sac.gradient_steps' must be 0 or more")
    if not 0 <= cfg.dqn.sensor_dropout < 1:
        raise UserError(
            f"config key 'dqn.sensor_dropout' must be in [0, 1), got {cfg.dqn.sensor_dropout}"
        )
    if cfg.dqn.sensor_dropout and cfg.model.kind != "fusion":
        raise UserError(
            "dqn.sensor_dropout drops whole sensors of a fused observation: it needs "
            f"model.kind=fusion, not model.kind={cfg.model.kind}"
        )
    if cfg.model.embed % cfg.model.heads:
        raise UserError(f"model.heads={cfg.model.heads} must divide model.embed={cfg.model.embed}")
    if cfg.env.preprocess == "atari" and cfg.algo != "ppo":
        raise UserError(f"env.preprocess=atari is built for algo=ppo only, not algo={cfg.algo}")
    if (cfg.env.preprocess == "atari") != (cfg.model.kind == "nature_cnn"):
        raise UserError(
            "model.kind=nature_cnn and env.preprocess=atari go together: the CNN reads stacked "
            "frames, the other networks flat vectors"
        )
    controlled = (cfg.env.config or {}).get("controlled_vehicles", 1)
    if controlled != 1 and cfg.algo not in ("dqn", "ppo"):
        raise UserError(
            f"env.config.controlled_vehicles={controlled}: vehicles share one policy with "
            f"algo=dqn or ppo, not algo={cfg.algo}"
        )
    batch = cfg.env.num_envs * cfg.ppo.num_steps
    if cfg.algo == "ppo" and batch % cfg.ppo.num_minibatches:
        raise UserError(
            f"ppo.num_minibatches={cfg.ppo.num_minibatches} must divide the rollout of "
            f"env.num_envs * ppo.num_steps = {batch} steps"
        )


def load(path: str | Path, overrides: list[str] | None = None) -> RLConfig:
    """Defaults < TOML file (a path, a preset name or a run directory) < overrides."""
    values = config_lib.read_toml(config_lib.resolve_path(path))
    if "algo" not in values:
        raise UserError(
            f"{path} is not a reinforcement-learning config (it has no 'algo' key); "
            "try a preset: cartpole_ppo, cartpole_dqn, cartpole_reinforce, lunarlander_ppo, "
            "pong_ppo, pong_pg, pendulum_sac, parking_sac_her"
        )
    return build(config_lib.merge(values, config_lib.parse_overrides(overrides or [])))


def to_toml(cfg: RLConfig) -> str:
    """The resolved config as TOML; only the chosen algorithm's section is written."""
    out: dict[str, Any] = {"seed": cfg.seed, "algo": cfg.algo}
    for name in ("env", "model", "train", "optim", cfg.algo):
        out[name] = dataclasses.asdict(getattr(cfg, name))
    return config_lib.dict_to_toml(out)
