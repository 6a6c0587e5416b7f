"""Property-based fuzzing of what users type (hypothesis, seeded and bounded for CI).

The property, for any config values and any arguments: the command works (exit 0), or it
refuses with exit status 2 and exactly one line on stderr, and leaves nothing behind. A
traceback, another exit status or a half-made run directory is a bug.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuralab import config
from neuralab.cli import main
from neuralab.errors import UserError
from neuralab.tasks import build_task

SECTIONS = {
    "data": config.DataConfig,
    "train": config.TrainConfig,
    "optim": config.OptimConfig,
    "sched": config.SchedConfig,
    "adv": config.AdvConfig,
    "ssl": config.SSLConfig,
}
KEYS = ["seed", "task", "model.widths", "model.dropout", "model.name", "no.such", "train"] + [
    f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)
]
# values as a user writes them after `key=`: numbers of every size and sign, infinities,
# words, lists, empty, and what the right type of a field looks like
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "", "[]", "[8, 16]", "1e400", "-0", "nan", "inf", "0"]),
    st.sampled_from(["none", "pgd", "simclr", "gpt", "cnn", "mlp", "val/loss", "streams"]),
    st.text(max_size=12),
)
OVERRIDES = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4).map(
    lambda pairs: [f"{k}={v}" for k, v in pairs]
)
FUZZ = settings(
    max_examples=300,
    derandomize=True,  # the same examples in every run: CI is repeatable
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(OVERRIDES)
def test_any_overrides_load_and_check_or_give_one_line(overrides):
    """Loading a config and checking it for its kind of run raises nothing but a one-line
    UserError, whatever the overrides."""
    try:
        cfg = config.load("digits_cnn", overrides)
        build_task(cfg).check(cfg)
    except UserError as err:
        assert "\n" not in str(err) and str(err)


def _cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as exit:  # argparse's own errors
            code = exit.code
    return code, err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(FUZZ, max_examples=40)
@given(overrides=OVERRIDES, n=st.integers(min_value=0, max_value=10**6))
def test_train_with_any_overrides_runs_or_refuses_leaving_nothing(workdir, overrides, n):
    """``neuralab train`` with random overrides (at most 2 steps when it runs): exit 0, or
    exit 2 with one line on stderr and no run directory left behind."""
    run_dir = workdir / f"r{n}"
    if run_dir.exists():
        return
    args = ["train", "digits_cnn", "model.widths=4,8", "train.max_steps=2", *overrides]
    code, err = _cli([*args, "--run-dir", str(run_dir), "--no-progress", "--json"])
    assert code in (0, 2), err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert not run_dir.exists(), (overrides, err)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["--n", "--eps", "--steps", "--alpha", "--top-k"]),
                          VALUES), max_size=4))  # fmt: skip
def test_option_values_are_refused_in_one_line(argv):
    """Random option values for commands that need a run: whatever they are, a missing run is
    refused in one line, before any value is used (exit 2)."""
    for command in ("attack", "predict", "test", "sample"):
        code, err = _cli([command, "/nonexistent/run", *argv])
        assert code == 2 and len(err.strip().splitlines()) == 1, (command, argv, err)
