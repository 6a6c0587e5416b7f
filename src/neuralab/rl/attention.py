"""What an ego-attention policy looks at: its attention over the other vehicles, drawn on the
road from above at a few moments of a greedy episode (``neuralab rl attention RUN``).

Row i of the Kinematics table is the i-th vehicle highway-env's observation lists (the ego,
then the nearest others); ``vehicles_in_view`` lists the same vehicles from the simulator,
so each attention weight lands on the car it belongs to. Where several controlled cars share
the policy (``rl.agents``), the plot shows the first car's attention.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuralab.errors import UserError
from neuralab.plots import save_figure, subplots
from neuralab.rl import driving
from neuralab.rl.agents import agents
from neuralab.rl.envs import make_env
from neuralab.rl.evaluate import EVAL_SEED
from neuralab.rl.nets import EgoAttention, as_batch

VIEW_M = 50  # metres shown around the ego vehicle


def vehicles_in_view(env) -> list:
    """The vehicles of the current observation's rows, in its order (the ego first)."""
    u = env.unwrapped
    obs = driving.observation_type(env)
    if obs.order != "sorted":
        raise UserError("the attention plot needs env.config.observation.order = 'sorted'")
    others = u.road.close_objects_to(
        u.vehicle, u.PERCEPTION_DISTANCE, count=obs.vehicles_count - 1,
        see_behind=obs.see_behind, sort=True, vehicles_only=not obs.include_obstacles,
    )  # fmt: skip
    return [u.vehicle, *others[-obs.vehicles_count + 1 :]]


def _attention_net(agent) -> EgoAttention:
    for module in agent.modules():
        if isinstance(module, EgoAttention):
            return module
    raise UserError("this run's policy has no ego-attention (model.kind = 'ego_attention')")


def episode_attention(cfg, agent, frames: int, seed: int = EVAL_SEED) -> list[dict]:
    """One greedy episode; at ``frames`` evenly spaced steps, each vehicle in view with its
    position, heading and attention weight (mean over heads), and the ego's action."""
    net = _attention_net(agent)
    env = make_env(cfg.env)
    obs, _ = env.reset(seed=seed)
    snapshots, done, step = [], False, 0
    k = agents(env)
    while not done:
        with torch.no_grad():
            actions = agent.greedy(as_batch(obs.reshape(k, -1))).numpy()  # each car's
        weights = net.last_attention[0].mean(0).numpy()  # (V,): the first car's
        cars = vehicles_in_view(env)
        snapshots.append({
            "step": step, "action": driving.action_type(env).actions[int(actions[0])],
            "cars": [(np.array(v.position), float(v.heading), float(w))
                     for v, w in zip(cars, weights, strict=False)],
        })  # fmt: skip
        obs, _, terminated, truncated, _ = env.step(actions if k > 1 else actions[0])
        done, step = terminated or truncated, step + 1
    env.close()
    picks = np.unique(np.linspace(0, len(snapshots) - 1, frames).round().astype(int))
    return [snapshots[i] for i in picks]


def plot_attention(snapshots: list[dict], out: Path, title: str) -> Path:
    """Each snapshot from above: the ego in green, every other car shaded and joined to the
    ego by a line as strong as the attention it gets."""
    fig, axes = subplots(1, len(snapshots), figsize=(4 * len(snapshots), 4), squeeze=False)
    for ax, snap in zip(axes[0], snapshots, strict=True):
        ego = snap["cars"][0][0]
        for i, (pos, heading, w) in enumerate(snap["cars"]):
            colour = "tab:green" if i == 0 else (1.0, 1.0 - w, 1.0 - w)
            length = np.array([np.cos(heading), np.sin(heading)]) * 2.5
            ax.plot(*zip(pos - length, pos + length, strict=True), lw=6, color=colour,
                    solid_capstyle="butt", zorder=3)  # fmt: skip
            ax.plot(*zip(pos - length, pos + length, strict=True), lw=7, color="k",
                    solid_capstyle="butt", zorder=2)  # fmt: skip
            if i:
                ax.plot(*zip(ego, pos, strict=True), color="tab:red", alpha=w, lw=1 + 4 * w)
                ax.annotate(f"{w:.2f}", pos, textcoords="offset points", xytext=(4, 4),
                            fontsize=7)  # fmt: skip
        ax.set(title=f"step {snap['step']}, action {snap['action']}", aspect="equal")
        ax.set_xlim(ego[0] - VIEW_M, ego[0] + VIEW_M)
        ax.set_ylim(ego[1] - VIEW_M, ego[1] + VIEW_M)
        ax.invert_yaxis()  # highway-env's y points down the screen
    fig.suptitle(title)
    return save_figure(fig, out)
