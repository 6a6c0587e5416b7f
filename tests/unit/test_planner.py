"""The tree-search driver (optimistic planning, rl/planner.py): its bounds and choices worked
out by hand on toy roads, and on highway-env's own simulator in a scene where keeping the
speed crashes."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest

from neuralab.errors import UserError
from neuralab.rl.planner import plan, planner


class ToyRoad:
    """A deterministic road with two actions and a hand-made reward table, with the parts of
    highway-env's interface the planner uses (simplify, step, vehicle.crashed, config).

    ``rewards[mode][action]`` is (reward, next mode, terminated, crashed); the road starts in
    mode "start". Counts the simulated steps in a list shared by every copy."""

    def __init__(self, rewards: dict, steps: list) -> None:
        self.rewards, self.steps, self.mode = rewards, steps, "start"
        self.action_space = gym.spaces.Discrete(2)
        self.config = {"normalize_reward": True}
        self.vehicle = type("Car", (), {"crashed": False})()
        self.observation_type = None
        self.spec = type("Spec", (), {"id": "toy-v0"})()

    @property
    def unwrapped(self) -> ToyRoad:
        return self

    def simplify(self) -> ToyRoad:
        return copy.deepcopy(self)

    def __deepcopy__(self, memo) -> ToyRoad:
        twin = ToyRoad(self.rewards, self.steps)
        twin.mode, twin.vehicle.crashed = self.mode, self.vehicle.crashed
        twin.observation_type = self.observation_type
        return twin

    def step(self, action: int):
        self.steps.append(action)
        reward, self.mode, terminated, crashed = self.rewards[self.mode][action]
        self.vehicle.crashed = crashed
        return self.observation_type.observe(), reward, terminated, False, {}


DASH, STEADY = 0, 1
TRAP = {  # dashing pays 1 now, then crashes whatever follows; steady pays 0.6 for ever
    "start": {DASH: (1.0, "dashed", False, False), STEADY: (0.6, "steady", False, False)},
    "dashed": {DASH: (0.0, "crashed", True, True), STEADY: (0.0, "crashed", True, True)},
    "steady": {DASH: (0.6, "steady", False, False), STEADY: (0.6, "steady", False, False)},
}


def test_looking_deeper_turns_down_a_dash_into_a_crash() -> None:
    """By hand, gamma = 0.7 (bound tail 1/(1-0.7) = 3.33): expanding the root gives DASH
    u = 1, b = 1 + 0.7 * 3.33 = 3.33 and STEADY u = 0.6, b = 2.93; the optimistic leaf is
    DASH's, whose children crash: u = b = 1 + 0.7 * 0 = 1. With 2 expansions (budget 4) the
    best u is DASH's 1 > 0.6, so it dashes. A third expansion (budget 6) opens STEADY (b =
    2.93 is now highest): u = 0.6 + 0.7 * 0.6 = 1.02 > 1, so it keeps steady. Each expansion
    simulates both actions, so the budget is the number of simulated steps."""
    for budget, choice in ((2, DASH), (4, DASH), (6, STEADY), (40, STEADY)):
        steps: list = []
        assert plan(ToyRoad(TRAP, steps), budget=budget, gamma=0.7) == choice
        assert len(steps) == budget


def test_an_arrival_keeps_its_reward_and_a_crash_ends_it() -> None:
    """Arriving pays 0.5 and ends the episode without a crash: worth 0.5 + 0.7 * 0.5 * 3.33
    = 1.67 for ever after. Dawdling pays 0.4 a step: at most 0.4 * 3.33 = 1.33. The planner
    arrives. Had the arrival been a crash (its future worth 0: u = 0.5), dawdling for two steps
    (0.4 + 0.28 = 0.68) would win."""
    arrive = {
        "start": {0: (0.5, "end", True, False), 1: (0.4, "start", False, False)},
    }
    assert plan(ToyRoad(arrive, []), budget=20, gamma=0.7) == 0
    crash = {"start": {0: (0.5, "end", True, True), 1: (0.4, "start", False, False)}}
    assert plan(ToyRoad(crash, []), budget=20, gamma=0.7) == 1


def test_the_planner_refuses_what_it_cannot_plan_for() -> None:
    """Rewards outside [0, 1] break its bounds, and bad settings are caught at once; each is
    a one-line error."""
    loud = {"start": {0: (2.0, "start", False, False), 1: (0.0, "start", False, False)}}
    with pytest.raises(UserError, match=r"rewards in \[0, 1\]"):
        plan(ToyRoad(loud, []), budget=4)
    road = ToyRoad(TRAP, [])
    road.config["normalize_reward"] = False
    with pytest.raises(UserError, match="normalize_reward=true"):
        planner()(road)
    with pytest.raises(UserError, match="--budget must be positive"):
        planner(budget=0)
    with pytest.raises(UserError, match="gamma"):
        planner(gamma=1.0)


def test_the_planner_brakes_behind_a_slow_car_on_the_real_simulator() -> None:
    """highway-env's own scene of test_driving: one lane, a 21 m/s car 60 m ahead. Keeping
    the speed crashes; the planner, searching the simulator's future with rl-agents' budget
    (75 simulated steps a decision), gets through all 20 seconds without a crash. (With 25 it
    sees only about two seconds ahead, speeds up to 30 m/s and crashes: depth matters.)"""
    pytest.importorskip("highway_env")
    from test_driving import IDLE, _slow_car_ahead

    assert _slow_car_ahead(lambda env: IDLE)["crashed"]
    planned = _slow_car_ahead(planner())
    assert not planned["crashed"] and planned["speed"] < 25
