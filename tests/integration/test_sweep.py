"""Hyperparameter sweeps: search-space errors before any trial, a small sweep and its status,
pruning from per-epoch reports, a killed worker's trial marked FAILED, and two worker
processes sharing one study on a real PostgreSQL server (marked ``postgres``)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_cli import neuralab

optuna = pytest.importorskip("optuna")

from neuralab.cli import main  # noqa: E402
from neuralab.config import load as load_config  # noqa: E402
from neuralab.runs import read_jsonl  # noqa: E402
from neuralab.sweep.run import work  # noqa: E402
from neuralab.sweep.space import load_sweep  # noqa: E402
from neuralab.sweep.storage import open_storage  # noqa: E402

# a tiny MLP on digits: a trial is a fraction of a second of training
TINY = """
[data]
name = "digits"
augment = false

[model]
name = "mlp"
hidden = [32]

[train]
epochs = {epochs}
batch_size = 64
log_every = 1000
channels_last = false
"""


def write_sweep(path: Path, name: str, params: str, epochs: int = 2, extra: str = "") -> Path:
    path.write_text(
        f'[sweep]\nname = "{name}"\nsampler = "random"\npruner = "none"\n{extra}\n'
        f"[sweep.params]\n{params}\n" + TINY.format(epochs=epochs)
    )
    return path


LR = '"optim.lr" = { low = 1e-3, high = 3e-2, log = true }'
SPACE = "\n".join(
    [
        LR,
        '"train.batch_size" = { choices = [32, 64] }',
        '"model.dropout" = { low = 0.0, high = 0.2, step = 0.1 }',
    ]
)


def run_main(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("params", "extra", "fragment"),
    [
        ('"optim.lrr" = { low = 0.1, high = 1.0 }', "", "unknown config key 'optim.lrr'"),
        ('"model.depth" = { low = 1, high = 3 }', "", "unknown config key 'model.depth'"),
        ('"optim.lr" = { low = 0.1, high = 0.01 }', "", "must be below high"),
        ('"optim.lr" = { low = 0.0, high = 0.1, log = true }', "", "needs low > 0"),
        ('"optim.lr" = { low = 0.1 }', "", "a range is { low, high"),
        ('"train.batch_size" = { low = 16, high = 64, step = 0.5 }', "", "is an integer"),
        ('"optim.name" = { choices = ["adamw", "adam"] }', "", "must be one of adamw, sgd"),
        ('"optim.name" = { low = 0, high = 1 }', "", "must be a string"),
        (LR, 'metric = "test/acc"', "the test split is never used"),
        (LR, 'direction = "up"', "sweep.direction must be one of maximize, minimize"),
    ],
)
def test_bad_search_space_is_one_line_before_any_trial(
    tmp_path, monkeypatch, capsys, params, extra, fragment
):
    """An unknown key, a bad range, a wrong type, an impossible choice or a test-set metric
    is exit status 2 with one line naming the parameter, and no trial starts (no runs/)."""
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path / "bad.toml", "bad", params, extra=extra)
    code, out, err = run_main(capsys, "sweep", str(path), "--trials", "2")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "runs").exists()


def test_cli_usage_errors(tmp_path, monkeypatch, capsys):
    """Missing --trials, several workers on in-memory storage, an unknown sweep or storage
    scheme: one line each, exit 2."""
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path / "s.toml", "s", LR)
    for args, fragment in [
        (["sweep", str(path)], "--trials N"),
        (["sweep", str(path), "--trials", "2", "--storage", "memory", "--workers", "2"], "shared"),
        (["sweep", str(path), "--trials", "2", "--storage", "mysql://x/y"], "not supported"),
        (["sweep", "status", "nothing"], "no sweep 'nothing'"),
        (["sweep", "digits_cnn", "--trials", "2"], "no [sweep] table"),
    ]:
        code, _, err = run_main(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, (args, err)


def test_list_choices_and_integer_ranges_reach_the_run_config(tmp_path):
    """A list choice (model.hidden) and an integer range (train.epochs) build the run config
    with the right types: the sweep's parameter values become ordinary config values."""
    params = (
        '"model.hidden" = { choices = [[16], [32, 32]] }\n"train.epochs" = { low = 1, high = 3 }'
    )
    sweep = load_sweep(write_sweep(tmp_path / "s.toml", "s", params))
    hidden, epochs = sweep.params
    assert hidden.choices == ("[16]", "[32, 32]") and epochs.integer
    from neuralab.sweep.space import trial_config

    cfg = trial_config(sweep, {"model.hidden": "[32, 32]", "train.epochs": 3})
    assert cfg.model.options["hidden"] == (32, 32) and cfg.train.epochs == 3


def test_small_sweep_completes_and_status_reports_the_best(tmp_path, monkeypatch, capsys):
    """Three trials on digits each leave a normal run directory whose config holds the
    trial's parameters; `sweep status --json` reports the best trial (the highest validation
    accuracy, never a test metric), importance and the plots."""
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path / "small.toml", "small", SPACE)
    code, out, err = run_main(capsys, "sweep", str(path), "--trials", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["trials"] == 3
    code, out, _ = run_main(capsys, "sweep", "status", "small", "--json")
    info = json.loads(out)
    assert code == 0 and info["states"] == {"COMPLETE": 3} and info["metric"] == "val/acc"
    best = info["best"]
    assert best["value"] == max(r["value"] for r in info["top"])
    run = tmp_path / best["run_dir"]
    assert run == tmp_path / "runs/small" / f"trial-{best['number']}"
    cfg = load_config(run / "config.toml")
    assert cfg.optim.lr == pytest.approx(best["params"]["optim.lr"])
    assert cfg.train.batch_size == best["params"]["train.batch_size"]
    vals = [r["val/acc"] for r in read_jsonl(run / "metrics.jsonl") if "val/acc" in r]
    assert best["value"] == pytest.approx(max(vals))
    assert not any(k.startswith("test/") for k in json.dumps(info).split('"'))
    assert set(info["importance"]) == {"optim.lr", "train.batch_size", "model.dropout"}
    assert all((tmp_path / p).stat().st_size > 0 for p in info["plots"])
    # the study holds its budget: asking for 3 again runs nothing
    code, out, _ = run_main(capsys, "sweep", str(path), "--trials", "3", "--json")
    assert code == 0 and json.loads(out)["trials"] == 3


def test_per_epoch_reports_reach_the_pruner(tmp_path, monkeypatch):
    """With a pruner that prunes every report, each trial stops at its first validation:
    Optuna holds that validation's val/acc as the report of step 1, and the run logged no
    second validation although it was configured for three epochs."""
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(write_sweep(tmp_path / "p.toml", "p", LR, epochs=3))
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # any accuracy is below 2
    study = work(sweep, "memory", 2, pruner=always)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for t in trials:
        records = read_jsonl(Path(t.user_attrs["run_dir"]) / "metrics.jsonl")
        vals = [r["val/acc"] for r in records if "val/acc" in r]
        assert t.intermediate_values == {1: pytest.approx(vals[0])} and len(vals) == 1


def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """A learning rate that makes the loss non-finite fails that trial, with the reason kept
    for `sweep status`, and the worker goes on to the next trial instead of stopping."""
    monkeypatch.chdir(tmp_path)
    params = '"optim.lr" = { choices = [1e9] }'
    sweep = load_sweep(write_sweep(tmp_path / "d.toml", "d", params, extra='[optim]\nname = "sgd"'))
    trials = work(sweep, "memory", 2).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("loss became" in t.user_attrs["error"] for t in trials)


def _study_states(url: str, name: str) -> dict[int, str]:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return {t.number: t.state.name for t in study.get_trials()}


def test_killed_worker_trial_is_marked_failed(tmp_path):
    """A worker killed with SIGKILL in the middle of a trial leaves it RUNNING; once its
    heartbeat is older than the grace period, the next worker marks it FAILED (not RUNNING,
    not run again) and runs the rest of the budget: 2 trials, trial 0 FAIL, trial 1 COMPLETE."""
    heartbeat = "heartbeat_interval = 1\ngrace_period = 2"
    path = write_sweep(tmp_path / "k.toml", "k", LR, epochs=6, extra=heartbeat)
    url = f"sqlite:///{tmp_path}/runs/k/sweep.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "neuralab", "sweep", str(path), "--trials", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs/k/trial-0/metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and "val/acc" in metrics.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    assert _study_states(url, "k") == {0: "RUNNING"}
    time.sleep(max(0.0, killed + 3 - time.monotonic()))
    neuralab("sweep", str(path), "--trials", "2", cwd=tmp_path)
    assert _study_states(url, "k") == {0: "FAIL", 1: "COMPLETE"}
    assert sorted(p.name for p in (tmp_path / "runs/k").glob("trial-*")) == ["trial-0", "trial-1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server from Debian's packages on a free loopback port, in a
    temporary directory; yields the URL of an empty database. initdb refuses to run as
    root, so as root the server runs as the `postgres` user the package creates."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.environ.get("NEURALAB_REQUIRE_POSTGRES") == "1":
            pytest.fail("NEURALAB_REQUIRE_POSTGRES=1 but PostgreSQL is not installed")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = Path(found[-1]).parent
    home = Path(tempfile.mkdtemp(prefix="neuralab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = home / "data"

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=60)

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "neuralab", "--auth=trust", "-N")
    options = f"-k {home} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(home / "log"),
        "-w",
        "-o",
        options,
        "start",
    )
    try:
        pg(
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "neuralab",
            "sweeps",
        )
        yield f"postgresql://neuralab@127.0.0.1:{port}/sweeps"
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.postgres
def test_two_workers_share_one_postgres_study(tmp_path, postgres):
    """`--workers 2` on PostgreSQL: two processes take trials from one study until it holds
    exactly 6; every trial completed once, numbers 0..5 with none missing or repeated, each
    has its own run directory whose config holds that trial's parameters and one set of
    validations, and both worker processes ran trials."""
    path = write_sweep(tmp_path / "pg.toml", "pg", SPACE)
    out = neuralab("sweep", str(path), "--trials", "6", "--workers", "2", "--storage", postgres,
                   "--json", cwd=tmp_path).stdout  # fmt: skip
    assert json.loads(out)["states"] == {"COMPLETE": 6}
    trials = optuna.load_study(study_name="pg", storage=open_storage(postgres)).get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(p.name for p in (tmp_path / "runs/pg").glob("trial-*")) == [
        f"trial-{n}" for n in range(6)
    ]
    for t in trials:
        run = tmp_path / t.user_attrs["run_dir"]
        assert run.name == f"trial-{t.number}"
        assert load_config(run / "config.toml").optim.lr == pytest.approx(t.params["optim.lr"])
        vals = [r for r in read_jsonl(run / "metrics.jsonl") if "val/acc" in r]
        assert [r["epoch"] for r in vals] == [1.0, 2.0]  # one run per trial, not two interleaved
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # host:pid#index
