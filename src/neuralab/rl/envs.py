"""Environments: seeded Gymnasium envs, in-process vector envs, Pong from pixels.

Autoreset: Gymnasium >= 1.0 resets a finished sub-env on the *next* step by
default (that step returns the reset observation with reward 0). We use
``AutoresetMode.SAME_STEP`` instead: the step that ends an episode returns its
reward and ``terminated``/``truncated`` flags together with the first
observation of the next episode, and the true last observation in
``infos["final_obs"]`` (needed to bootstrap truncated episodes). So every
transition a learner sees is real; none needs masking.

In-process (``SyncVectorEnv``) by default rather than subprocess vector envs: for
environments as cheap as CartPole or LunarLander, pickling observations between
processes costs more than stepping the envs. highway-env's simulators are slow enough
(tens of steps per CPU-second) that subprocesses (``env.vector = "async"``) pay.

Training episodes' returns and lengths are counted by Gymnasium's own
``RecordEpisodeStatistics`` vector wrapper (which counts SAME_STEP episodes right from
Gymnasium 1.4 on; earlier versions drop the first step of every episode after an env's first).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neuralab.errors import UserError
from neuralab.rl import atari, driving, her
from neuralab.rl.agents import AgentStreams, SharedPolicy, agents, vehicle_info
from neuralab.rl.config import EnvConfig
from neuralab.rl.nets import Sensors

try:
    import gymnasium as gym
except ImportError:
    raise UserError("reinforcement learning needs Gymnasium: pip install 'neuralab[rl]'") from None


def derived_seed(*keys: int) -> int:
    """A 31-bit seed from a tuple of ints, e.g. (seed, update) to re-seed envs at a checkpoint."""
    digest = hashlib.sha256(repr(tuple(keys)).encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1


def pong_frame(rgb: np.ndarray) -> np.ndarray:
    """Karpathy's pg-pong ``prepro``: 210x160x3 frame -> 6400 int8 values in {0, 1}.

    Crop to the play area (rows 35-194), keep every second pixel (80x80) of the red
    channel, erase the two background colours (144, 109), set paddles and ball to 1.
    """
    frame = rgb[35:195:2, ::2, 0]  # (80, 80)
    return ((frame != 144) & (frame != 109) & (frame != 0)).astype(np.int8).ravel()


class PongDifference(gym.Wrapper):
    """Observations are the difference of consecutive preprocessed frames, so a static
    policy network sees motion (pg-pong); values in {-1, 0, 1}, int8 to keep batches small."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-1, 1, (6400,), np.int8)
        self._prev = np.zeros(6400, np.int8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._prev = pong_frame(obs)
        return self._prev.copy(), info  # first frame minus an empty one, as in pg-pong

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        frame = pong_frame(obs)
        diff, self._prev = frame - self._prev, frame
        return diff, reward, terminated, truncated, info


class ActionSubset(gym.ActionWrapper):
    """Only some of the env's discrete actions, e.g. Pong's UP and DOWN ([2, 3]) as in pg-pong."""

    def __init__(self, env: gym.Env, actions: tuple[int, ...]) -> None:
        super().__init__(env)
        n = env.action_space.n
        if any(a < 0 or a >= n for a in actions):
            raise UserError(f"env.actions={list(actions)}: this env's actions are 0..{n - 1}")
        self.actions = actions
        self.action_space = gym.spaces.Discrete(len(actions))

    def action(self, action):
        return self.actions[int(action)]


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One environment as configured; unknown ids and unsupported spaces are UserErrors.

    highway-env's environments get ``cfg.config`` (its keys checked against the env's own
    defaults), flat observations (a Kinematics table of V vehicles x F features becomes V*F
    numbers) and ``driving.DrivingMetrics``.
    """
    if cfg.preprocess == "atari":
        raise UserError("env.preprocess=atari runs in ALE's vector env (rl.atari), not one env")
    kwargs: dict = {"max_episode_steps": cfg.max_episode_steps} if cfg.max_episode_steps else {}
    if cfg.id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    is_driving = driving.is_driving_id(cfg.id)
    if is_driving:  # its renderer (and camera sensor) draws off-screen: no display, no sound
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")  # ("dummy" draws black frames)
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    if cfg.config and cfg.id in gym.registry:  # (an unknown id is gym.make's to report)
        if not is_driving:
            raise UserError(
                f"env.config holds highway-env's settings; {cfg.id} is not a highway-env "
                "environment (e.g. highway-fast-v0, intersection-v0)"
            )
        driving.check_config(cfg.id, cfg.config)
        kwargs["config"] = driving.as_highway_config(driving.shared_config(cfg.id, cfg.config))
    try:
        with warnings.catch_warnings():
            # "intersection-v0 is out of date, consider v1": highway-env's v1 is another env
            # (continuous actions), not a newer version of this one
            warnings.filterwarnings("ignore", ".*is out of date", DeprecationWarning)
            env = gym.make(cfg.id, render_mode=render_mode, **kwargs)
    except gym.error.Error as err:
        hint = "" if driving.register() else f"; highway-env's ids need {driving.INSTALL}"
        raise UserError(
            f"cannot make environment {cfg.id!r}: {err} "
            f"(e.g. CartPole-v1, LunarLander-v3, ALE/Pong-v5, highway-fast-v0){hint}"
        ) from None
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        if not is_driving:
            raise
        raise UserError(f"{cfg.id}: highway-env rejects env.config: {err}") from None
    if any(w.name == "MultiAgentWrapper" for w in env.spec.additional_wrappers):
        raise UserError(
            f"{cfg.id} returns a tuple of rewards; neuralab shares the policy among the cars "
            "itself: use intersection-multi-agent-v0 or env.config.controlled_vehicles"
        )
    space = env.action_space
    if isinstance(space, gym.spaces.Tuple):  # several controlled vehicles: see rl.agents
        if cfg.actions or her.is_goal_space(env.observation_space[0]):
            raise UserError(
                f"{cfg.id}: several controlled vehicles take neither env.actions nor goals"
            )
        return SharedPolicy(_driving(env, cfg))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if not np.all(np.isfinite(space.low) & np.isfinite(space.high)):
            raise UserError(f"{cfg.id} has unbounded actions {space}; SAC's squash needs bounds")
        if np.any(space.low != -1) or np.any(space.high != 1):
            ones = np.ones(space.shape, np.float32)  # float32 bounds: no precision warning
            env = gym.wrappers.RescaleAction(env, -ones, ones)  # the policies act in [-1, 1]
    elif not isinstance(space, gym.spaces.Discrete):
        raise UserError(f"{cfg.id} has {space} actions; discrete or a flat Box are supported")
    if is_driving:
        env = _driving(env, cfg)
    if her.is_goal_space(env.observation_space):
        env = her.GoalObservation(env)
    if cfg.preprocess == "pong":
        env = PongDifference(env)
    if cfg.actions:
        env = ActionSubset(env, cfg.actions)
    if len(env.observation_space.shape) != 1:
        raise UserError(
            f"{cfg.id} observes {env.observation_space.shape} arrays; the networks take flat "
            "vectors (for Atari Pong set env.preprocess=pong)"
        )
    return env


def _driving(env: gym.Env, cfg: EnvConfig) -> gym.Env:
    """A highway-env env with its driving metrics and its observation flattened (with several
    controlled vehicles, each one's by ``SharedPolicy``)."""
    space = env.observation_space
    if her.is_goal_space(space):  # parking-v0: flattened by make_env's GoalObservation
        return driving.DrivingMetrics(env)
    observation = type(driving.observation_type(env)).__name__
    fused = observation == "TupleObservation"  # several sensors: see sensors()
    shared = isinstance(env.action_space, gym.spaces.Tuple)  # flattened by SharedPolicy
    if shared:
        space = space[0]
    if not (isinstance(space, gym.spaces.Box) or fused):
        kind = env.unwrapped.config["observation"]
        kind = (kind["observation_config"] if shared else kind).get("type")
        raise UserError(
            f"{cfg.id} with observation type {kind!r} gives {type(space).__name__} "
            "observations; the networks here take one array (Kinematics, OccupancyGrid, "
            "Lidar, TimeToCollision, GrayscaleObservation) or a TupleObservation of them"
        )
    env = driving.DrivingMetrics(env)
    if not shared and (fused or len(space.shape) > 1):  # a Tuple: sensors one after another
        env = gym.wrappers.FlattenObservation(env)
    return env


SENSOR_NAMES = {  # highway-env's observation classes, as sensors
    "KinematicObservation": "kinematics",
    "OccupancyGridObservation": "occupancy_grid",
    "LidarObservation": "lidar",
    "TimeToCollisionObservation": "time_to_collision",
    "GrayscaleObservation": "camera",
}


def sensors(env: gym.Env) -> Sensors | None:
    """The ``Sensors`` of a driving env with a TupleObservation (None for one array): each
    part named after its observation type (a second of the same type gets ``_2``)."""
    if not hasattr(env.unwrapped, "observation_type"):
        return None
    observation = driving.observation_type(env)
    if type(observation).__name__ != "TupleObservation":
        return None
    parts, seen = [], set()
    spaces = observation.space()
    for sub, space in zip(observation.observation_types, spaces, strict=True):
        name = SENSOR_NAMES.get(type(sub).__name__, type(sub).__name__.lower())
        if name == "kinematics" and sub.features[0] != "presence":
            name = "kinematics_table"  # the ego-attention encoder needs presence first
        base, k = name, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        parts.append((name, space.shape, 1 / 255 if space.dtype == np.uint8 else 1.0))
    return Sensors(parts)


class SensorFailure(gym.ObservationWrapper):
    """Sensors that fail: their part of a fused observation reads zero (nothing seen)."""

    def __init__(self, env: gym.Env, failed: list[str]) -> None:
        super().__init__(env)
        layout = sensors(env)
        names = [] if layout is None else [name for name, _, _ in layout.parts]
        unknown = [name for name in failed if name not in names]
        if unknown:
            have = f"its sensors: {', '.join(names)}" if names else "it observes one array"
            raise UserError(f"no sensor {unknown[0]!r} to fail in {env.spec.id} ({have})")
        self.cut = [layout.slices()[name] for name in failed]

    def observation(self, obs: np.ndarray) -> np.ndarray:
        obs = obs.copy()
        for part in self.cut:
            obs[..., part] = 0  # (each vehicle's, where several share the policy)
        return obs


def make_vector_env(cfg: EnvConfig) -> gym.vector.VectorEnv:
    """``cfg.num_envs`` envs, reset on the step that ends an episode; that step's
    ``infos["episode"]`` holds the episode's return and length. ``cfg.vector`` steps them in
    this process (``sync``) or each in its own subprocess (``async``, forked: the slow
    pure-Python simulators of highway-env then use every core). With k controlled vehicles
    sharing the policy, the vector env has ``cfg.num_envs * k`` streams (``AgentStreams``)."""
    if cfg.preprocess == "atari":
        return atari.make_vector(cfg, cfg.num_envs)
    make = [lambda: make_env(cfg) for _ in range(cfg.num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if cfg.vector == "async":
        envs = gym.vector.AsyncVectorEnv(make, autoreset_mode=mode, context="fork")
    else:
        envs = gym.vector.SyncVectorEnv(make, autoreset_mode=mode)
    if isinstance(envs.single_action_space, gym.spaces.MultiDiscrete):  # SharedPolicy's
        return AgentStreams(envs)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def spaces(cfg: EnvConfig, continuous: bool = False) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of the configured env: of discrete actions, or
    with ``continuous`` (SAC) the dimensions of its Box of actions; an env of the other kind
    is a UserError. The shape is flat, except for highway-env's Kinematics table of V
    vehicles x F features with presence first: that is (V, F) (the networks still receive V*F
    numbers; ego-attention reads them as the table), Atari's stacks of frames, (4, 84, 84), and
    a TupleObservation's ``Sensors``."""
    if cfg.preprocess == "atari":
        return (atari.STACK, atari.SIZE, atari.SIZE), atari.n_actions(cfg)
    env = make_env(cfg)
    space = env.action_space
    if agents(env) > 1:  # each vehicle's: see rl.agents
        space = gym.spaces.Discrete(int(space.nvec[0]))
    if continuous != isinstance(space, gym.spaces.Box):
        env.close()
        if continuous:
            raise UserError(f"algo=sac acts continuously; {cfg.id} has {space} actions (try dqn)")
        raise UserError(
            f"{cfg.id} has continuous actions {space}; this algorithm picks discrete ones "
            "(use algo=sac)"
        )
    n_actions = int(space.shape[0] if continuous else space.n)
    obs_shape = env.observation_space.shape[agents(env) > 1 :]
    shape: tuple[int, ...] = sensors(env) or (int(np.prod(obs_shape)),)
    observation = None
    if hasattr(env.unwrapped, "observation_type"):
        observation = driving.observation_type(env)
    if type(observation).__name__ == "KinematicObservation" and observation.features[0] == (
        "presence"
    ):
        shape = (observation.vehicles_count, len(observation.features))
    env.close()
    return shape, n_actions


class EpisodeStats:
    """Returns and lengths of the episodes that finish in a ``make_vector_env``, collected
    from the ``infos`` of its steps (in the order of the envs that finish at each step)."""

    def __init__(self) -> None:
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def step(self, infos: dict) -> None:
        if "_episode" in infos:
            done = infos["_episode"]
            self.returns.extend(infos["episode"]["r"][done].tolist())
            self.lengths.extend(infos["episode"]["l"][done].tolist())

    def pop(self) -> dict[str, float]:
        """Mean return and length of the episodes finished since the last pop (if any)."""
        if not self.returns:
            return {}
        out = {
            "train/episode_return": float(np.mean(self.returns)),
            "train/episode_length": float(np.mean(self.lengths)),
            "train/episodes": len(self.returns),
        }
        self.returns, self.lengths = [], []
        return out


@dataclass
class Episode:
    obs: np.ndarray  # (T, obs_dim)
    actions: np.ndarray  # (T,)
    rewards: np.ndarray  # (T,)
    info: dict  # the last step's (a driving env's holds "driving", see driving.DrivingMetrics)

    @property
    def total(self) -> float:
        return float(self.rewards.sum())


def play_episodes(
    envs: list[gym.Env],
    act: Callable[[np.ndarray], np.ndarray],
    seeds: list[int | None],
    record: bool = True,
) -> list[Episode]:
    """One whole episode in each env, stepping the unfinished ones together.

    ``act`` maps a batch of observations (B, obs_dim) to B actions; ``seeds[i]``
    resets env i (None continues its RNG). With ``record=False`` only rewards
    are kept (evaluation). An env of k vehicles sharing the policy (``rl.agents``) gives k
    episodes, one per vehicle (its rewards, and its ``info["driving"]``), in a row.
    """
    first = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    k = [agents(env) for env in envs]
    obs = {i: o.reshape(k[i], -1) if k[i] > 1 else o[None] for i, o in enumerate(first)}
    trajs = [[{"obs": [], "actions": [], "rewards": []} for _ in range(n)] for n in k]
    last: list[dict] = [{} for _ in envs]
    while obs:
        ids = list(obs)
        actions = act(np.concatenate([obs[i] for i in ids]))
        start = 0
        for i in ids:
            a, start = actions[start : start + k[i]], start + k[i]
            o, r, terminated, truncated, last[i] = envs[i].step(a if k[i] > 1 else a[0])
            rewards = last[i]["agents_rewards"] if k[i] > 1 else [r]
            for j, t in enumerate(trajs[i]):
                if record:
                    t["obs"].append(obs[i][j])
                    t["actions"].append(a[j])
                t["rewards"].append(rewards[j])
            if terminated or truncated:
                del obs[i]
            else:
                obs[i] = o.reshape(k[i], -1) if k[i] > 1 else o[None]
    return [
        Episode(
            obs=np.stack(t["obs"]) if record else np.zeros((0,)),
            actions=np.asarray(t["actions"]),
            rewards=np.asarray(t["rewards"], dtype=np.float32),
            info=vehicle_info(info, j),
        )
        for ts, info in zip(trajs, last, strict=True)
        for j, t in enumerate(ts)
    ]
