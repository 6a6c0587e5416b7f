"""Trust under mistakes and faults (issue 25): one writer per run directory, bad values refused
before anything is written, results never silently replaced. Each test runs the CLI as a user
does, in separate processes, and failed before the fix it guards."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from test_cli import TINY, assert_user_error, neuralab

from neuralab.train import checkpoint


def _long_training(cwd) -> subprocess.Popen:
    """``neuralab train`` of 500 epochs in ``cwd/run``, returned once its first checkpoint
    exists (stderr piped)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuralab", "train", "digits_cnn", *TINY, "train.epochs=500"]
        + ["--run-dir", "run", "--no-progress"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (cwd / "run" / "checkpoints" / "last").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run never saved"
        time.sleep(0.2)
    return proc


def test_a_second_writer_of_a_run_directory_is_refused_while_the_first_runs(tmp_path):
    """Two real processes on one run directory: the second, new or --resume, gets one line
    naming the first's pid and leaves the first's files alone."""
    first = _long_training(tmp_path)
    try:
        config_before = (tmp_path / "run" / "config.toml").read_text()
        second = neuralab("train", "digits_cnn", "optim.lr=0.01", "--run-dir", "run", cwd=tmp_path,
                          check=False)  # fmt: skip
        assert_user_error(second, f"in use by process {first.pid}")
        resumed = neuralab("train", "--resume", "run", cwd=tmp_path, check=False)
        assert_user_error(resumed, f"in use by process {first.pid}")
        assert (tmp_path / "run" / "config.toml").read_text() == config_before
    finally:
        first.kill()
        first.communicate()
    # killed with -9: the lock went with the process, and the run resumes
    resumed = neuralab("train", "--resume", "run", "train.epochs=1", cwd=tmp_path, check=False)
    assert "in use" not in resumed.stderr


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.eval_batch_size=0", "train.eval_batch_size"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=1e400", "optim.lr"),
        ("seed=100000000000000000000", "seed"),
        ("train.epochs=0", "train.epochs"),
        ("train.max_steps=-5", "train.max_steps"),
        ("adv.steps=0", "adv.steps"),
    ],
)
def test_bad_values_are_refused_before_a_run_directory_exists(tmp_path, override, key):
    proc = neuralab("train", "digits_cnn", override, "--run-dir", "r", cwd=tmp_path, check=False)
    assert_user_error(proc, f"config key '{key}'")
    assert not (tmp_path / "r").exists()


def test_check_refuses_a_bad_value_with_exit_2_not_1(tmp_path):
    proc = neuralab("check", "digits_cnn", "train.batch_size=0", cwd=tmp_path, check=False)
    assert_user_error(proc, "train.batch_size")


def test_check_says_which_kinds_of_run_it_covers(tmp_path):
    proc = neuralab("check", "bible_en_es_gru", cwd=tmp_path, check=False)
    assert_user_error(proc, "is a translate run, which it does not check")


def test_testing_another_checkpoint_keeps_the_headline_result(tmp_path):
    """``test --which last`` is recorded as test/last/..., beside the best checkpoint's
    test/... that ``train`` wrote; it never replaces it."""
    args = [*TINY, "train.max_steps=30", "train.val_every=10", "--run-dir", "r", "--json"]
    trained = json.loads(neuralab("train", "digits_cnn", *args, cwd=tmp_path).stdout)
    neuralab("test", "r", "--which", "last", "--json", cwd=tmp_path)
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["test/acc"] == trained["test/acc"]
    assert results["test/step"] == trained["test/step"]
    assert results["test/last/step"] == 30 and "test/last/acc" in results


def test_attack_refuses_a_negative_number_of_images(tmp_path):
    neuralab("train", "digits_cnn", *TINY, "train.max_steps=10", "--run-dir", "r", cwd=tmp_path)
    proc = neuralab("attack", "r", "--n", "-5", cwd=tmp_path, check=False)
    assert_user_error(proc, "--n must be >= 1")
    assert not (tmp_path / "r" / "attacks").exists()


def test_a_run_copied_with_its_links_followed_resumes_exactly(tmp_path):
    """``cp -rL`` turns checkpoints/last and best into directories; resuming the copy equals
    the straight run (a constant schedule, so 10 + 10 steps follow the same rates as 20)."""
    args = [*TINY, "sched.name=constant", "train.val_every=10"]
    neuralab("train", "digits_cnn", *args, "train.max_steps=20", "--run-dir", "a", cwd=tmp_path)
    neuralab("train", "digits_cnn", *args, "train.max_steps=10", "--run-dir", "b", cwd=tmp_path)
    shutil.copytree(tmp_path / "b", tmp_path / "c", symlinks=False)  # as cp -rL does
    assert not (tmp_path / "c" / "checkpoints" / "last").is_symlink()
    neuralab("train", "--resume", "c", "train.max_steps=20", "--no-progress", cwd=tmp_path)
    straight, copied = (checkpoint.read(tmp_path / r, "last").model for r in ("a", "c"))
    for key in straight:
        assert torch.equal(straight[key], copied[key]), key
    assert not list((tmp_path / "c" / "checkpoints").glob(".*"))


def test_a_closed_pipe_ends_quietly(tmp_path):
    proc = subprocess.run(
        f"{sys.executable} -m neuralab data list | head -1",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.startswith("dataset") and "Traceback" not in proc.stderr


def test_sigterm_stops_with_a_checkpoint_and_exit_143(tmp_path):
    """SIGTERM (a scheduler's stop) is handled like Ctrl-C: a checkpoint at the step boundary
    and the resume hint, with the shell's exit status for it, 128 + 15."""
    proc = _long_training(tmp_path)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "neuralab train --resume run" in err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["stop_signal"] == "SIGTERM"


def test_predict_refuses_top_k_zero(tmp_path):
    neuralab("train", "digits_cnn", *TINY, "train.max_steps=5", "--run-dir", "r", cwd=tmp_path)
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    proc = neuralab("predict", "r", "x.png", "--top-k", "0", cwd=tmp_path, check=False)
    assert_user_error(proc, "--top-k must be >= 1")


def test_a_run_stopped_before_its_first_checkpoint_is_started_again_in_place(tmp_path):
    """A set-up that failed after the run directory was made (here: the data vanished) leaves
    a directory with nothing to resume; --resume says so, and the same command reuses it."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.toml").write_text("seed = 0\n")
    (run / "metrics.jsonl").write_text("")
    resumed = neuralab("train", "--resume", "r", cwd=tmp_path, check=False)
    assert_user_error(resumed, "stopped before its first checkpoint")
    again = neuralab("train", "digits_cnn", *TINY, "train.max_steps=5", "--run-dir", "r",
                     cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0 and (run / "checkpoints" / "last").exists()


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_a_file_system_that_refuses_a_write_is_one_line(tmp_path, monkeypatch, capsys, code):
    """A read-only run directory, a full disk or a missing permission while writing a report
    (or an attack's files, or a probe's) is one line and exit 2, not a traceback. (Simulated:
    these tests run as root, whom a read-only mode does not stop.)"""
    from neuralab.cli import main
    from neuralab.report import html

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "report.html"))

    monkeypatch.setattr(html, "build_report", refuse)
    assert main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and os.strerror(code) in err and "report.html" in err


def test_run_dir_paths_that_cannot_be_run_directories(tmp_path):
    """--run-dir naming a file, or a name longer than the file system allows: one line."""
    (tmp_path / "afile").write_text("x")
    proc = neuralab("train", "digits_cnn", "--run-dir", "afile", cwd=tmp_path, check=False)
    assert_user_error(proc, "is a file, not a directory")
    long_name = "r" * 300
    proc = neuralab("train", "digits_cnn", "--run-dir", long_name, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "File name too long" in proc.stderr
