"""A driver that plans instead of learning: optimistic planning for deterministic systems.

OPD (Hren & Munos 2008, "Optimistic planning of deterministic systems"; the tree-search
agent highway-env's authors drive it with) searches the tree of meta-action sequences on
copies of the environment's own simulator. With rewards in [0, 1] and discount ``gamma``,
a node reached by actions a_1..a_d has collected u = sum_t gamma^(t-1) r_t, and no
continuation can add more than gamma^d / (1 - gamma), so b = u + gamma^d / (1 - gamma)
bounds every return through it. Each expansion simulates every action from the leaf of
highest b (optimism in the face of uncertainty), until ``budget`` simulated steps are
spent; the car then takes the first action of the sequence whose u is highest.

A crash ends the episode, so a crashed node's future is worth 0 (b = u); an episode that
ends any other way (the intersection's car arrived) keeps its last reward for ever. The
tree is planned afresh at every decision from a copy of the road that keeps only the
vehicles within the simulator's perception distance (``simplify``). The copies use the
simulator's own ``step``, so the plan models the other cars exactly as they will drive
(their IDM and MOBIL models are deterministic) -- except cars an env spawns at random (the
intersection's), which the copy draws from its own generator.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from neuralab.errors import UserError
from neuralab.rl.agents import agents

BUDGET = 75  # simulated steps per decision: rl-agents' highway configuration
GAMMA = 0.7  # its discount: a crash 3 s ahead still costs most of the bound


class _Unobserved:
    """Stands in for a copy's sensors: the planner reads the simulator, not observations
    (highway-env's Kinematics table costs ~40% of a step)."""

    def observe(self) -> None:
        return None


class _Node:
    __slots__ = ("state", "first", "depth", "value", "bound", "done")

    def __init__(self, state, first: int | None, depth: int, value: float, bound: float, done):
        self.state, self.first, self.depth = state, first, depth
        self.value, self.bound, self.done = value, bound, done


def plan(env, budget: int = BUDGET, gamma: float = GAMMA) -> int:
    """The meta-action OPD chooses in ``env``'s current state (``env``: a highway-env env,
    wrapped or not, with discrete actions and rewards in [0, 1])."""
    u = env.unwrapped
    n = u.action_space.n
    tail = 1 / (1 - gamma)
    road = u.simplify()
    road.observation_type = _Unobserved()
    root = _Node(road, None, 0, 0.0, tail, False)
    leaves, best = [root], {}
    for _ in range(max(1, budget // n)):
        leaf = max(leaves, key=lambda node: node.bound)
        if leaf.done:  # the best bound is exact: nothing left to learn
            break
        leaves.remove(leaf)
        for action in range(n):
            state = copy.deepcopy(leaf.state)
            _, reward, terminated, _, _ = state.step(action)
            reward = float(reward)
            if not -1e-6 <= reward <= 1 + 1e-6:
                raise UserError(
                    f"the planner needs rewards in [0, 1]; {env.spec.id} gave {reward:.3g} "
                    "(set env.config.normalize_reward=true)"
                )
            depth = leaf.depth + 1
            value = leaf.value + gamma ** (depth - 1) * reward
            if terminated:  # a crash is worth nothing more; an arrival keeps its reward
                value += 0.0 if state.vehicle.crashed else gamma**depth * reward * tail
                bound = value
            else:
                bound = value + gamma**depth * tail
            first = action if leaf.first is None else leaf.first
            leaves.append(_Node(state, first, depth, value, bound, terminated))
            best[first] = max(best.get(first, (-1.0, -1.0)), (value, bound))
    return max(best, key=lambda a: best[a])


def planner(budget: int = BUDGET, gamma: float = GAMMA) -> Callable:
    """A driver ``policy(env) -> action`` that plans each decision with ``budget`` simulated
    steps; checks the settings at once, and the env (two attribute reads) at each decision."""
    if budget < 1:
        raise UserError(f"--budget must be positive, got {budget}")
    if not 0 < gamma < 1:
        raise UserError(f"the planner's gamma must lie in (0, 1), got {gamma}")

    def act(env) -> int:
        u = env.unwrapped
        if agents(env) > 1:
            raise UserError(
                f"the planner drives one vehicle; {env.spec.id} has {agents(env)} controlled "
                "vehicles (env.config.controlled_vehicles)"
            )
        if not hasattr(u.action_space, "n") or not hasattr(u, "simplify"):
            raise UserError(
                f"the planner searches highway-env's discrete meta-actions; {env.spec.id} "
                "does not have them"
            )
        if u.config.get("normalize_reward") is False:
            raise UserError(
                f"the planner needs rewards in [0, 1]: run {env.spec.id} with "
                "env.config.normalize_reward=true"
            )
        return plan(env, budget, gamma)

    return act
