"""The CLI end to end, as a user runs it: separate processes, exit codes, files on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from neuralab.train import checkpoint

TINY = ["model.widths=8,16", "train.batch_size=32", "train.log_every=5"]


def neuralab(*args, cwd, check=True, **kw):
    env = {**os.environ, "NEURALAB_CACHE": str(cwd / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "neuralab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_user_error(proc, fragment):
    """Exit status 2 and exactly one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short digits run shared by the tests below: train -> (auto) test."""
    cwd = tmp_path_factory.mktemp("cli")
    proc = neuralab(
        "train",
        "digits_cnn",
        *TINY,
        "train.epochs=8",
        "--run-dir",
        "runs/d",
        "--json",
        "--no-progress",
        cwd=cwd,
    )
    return cwd, cwd / "runs" / "d", json.loads(proc.stdout)


def test_train_writes_the_run_directory(trained):
    """train prints one JSON object and leaves every file the contract promises."""
    cwd, run, result = trained
    assert result["status"] == "finished" and result["test/acc"] > 0.8
    for name in (
        "config.toml",
        "metrics.jsonl",
        "results.json",
        "plots/curves.png",
        "plots/confusion.png",
        "checkpoints/best/model.safetensors",
        "checkpoints/last/state.pt",
    ):
        assert (run / name).exists(), name
    saved = json.loads((run / "results.json").read_text())
    assert {"val/acc", "test/acc", "train/wall_s", "train/steps", "train/threads"} <= set(saved)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in r and "epoch" in r for r in records)
    assert any("val/acc" in r for r in records) and any("train/loss" in r for r in records)


def test_test_command_reproduces_the_test_accuracy(trained):
    cwd, run, result = trained
    out = json.loads(neuralab("test", str(run), "--json", cwd=cwd).stdout)
    assert out["test/acc"] == result["test/acc"]
    assert len(out["test/confusion"]) == 10 and sum(map(sum, out["test/confusion"])) == 359


def test_predict_classifies_image_files_of_any_size(trained, tmp_path):
    """Digits saved as 64x64 dark-on-light PNGs (like a photo of a digit) are inverted,
    shrunk back to 8x8 and mostly classified right by the trained model."""
    cwd, run, _ = trained
    digits = load_digits()
    paths, labels = [], []
    for i in range(1500, 1510):
        img = 255 - (digits.images[i] * 255 / 16).astype(np.uint8)  # dark digit, light paper
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(img).resize((64, 64), Image.NEAREST).save(path)
        paths.append(str(path))
        labels.append(int(digits.target[i]))
    out = json.loads(neuralab("predict", str(run), *paths, "--json", cwd=cwd).stdout)
    preds = out["predictions"]
    assert all(p["inverted"] and len(p["top"]) == 3 for p in preds)
    assert all(abs(sum(t["prob"] for t in p["top"]) - 1) < 1 for p in preds)
    correct = sum(int(p["top"][0]["class"]) == y for p, y in zip(preds, labels, strict=True))
    assert correct >= 7, correct


def test_existing_run_directory_is_refused(trained):
    cwd, run, _ = trained
    before = (run / "results.json").read_text()
    proc = neuralab("train", "digits_cnn", "--run-dir", str(run), cwd=cwd, check=False)
    assert_user_error(proc, "already exists")
    assert (run / "results.json").read_text() == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "digits_cnn", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["train", "digits_cnn", "train.epochs=x"], "must be an integer"),
        (["train", "no_such_preset"], "not found"),
        (["train", "digits_cnn", "data.name=mnist"], "neuralab data fetch mnist"),
        (["test", "nowhere"], "not a neuralab run directory"),
        (["data", "info", "imagenet"], "unknown dataset 'imagenet'"),
        (["models", "list", "vgg*"], "no model matches"),
        (["train", "--resume", "nowhere"], "not a neuralab run directory"),
        (["train", "--bogus-flag"], "unrecognized arguments"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, args, fragment, monkeypatch):
    """Each user mistake: status 2, one line that says what is wrong, no traceback.
    (MNIST is absent here: no apt package, and the cache is a fresh temporary directory.)"""
    monkeypatch.setenv("NEURALAB_DATA", str(tmp_path / "empty"))
    assert_user_error(neuralab(*args, cwd=tmp_path, check=False), fragment)


def test_json_outputs_are_single_objects(tmp_path):
    for args in (
        ["models", "list", "resnet*", "--json"],
        ["data", "list", "--json"],
        ["data", "info", "digits", "--json"],
    ):
        out = json.loads(neuralab(*args, cwd=tmp_path).stdout)
        assert isinstance(out, dict)
    models = json.loads(neuralab("models", "list", "resnet*", "--json", cwd=tmp_path).stdout)
    assert [m["name"] for m in models["models"]] == ["resnet20", "resnet32", "resnet56"]


def test_ctrl_c_then_resume_equals_a_straight_run(tmp_path):
    """A real Ctrl-C (SIGINT) to a training process saves a checkpoint and exits 130;
    `train --resume` finishes the run with parameters bit-identical to an uninterrupted run."""
    args = [
        "digits_cnn",
        *TINY,
        "train.max_steps=300",
        "train.checkpoint_every=10",
        "--no-progress",
    ]
    neuralab("train", *args, "--run-dir", "straight", cwd=tmp_path)
    env = {**os.environ, "NEURALAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuralab", "train", *args, "--run-dir", "cut"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (tmp_path / "cut" / "checkpoints" / "last").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    stopped_at = checkpoint.read(tmp_path / "cut", "last").meta["progress"]["step"]
    assert 0 < stopped_at < 300
    neuralab("train", "--resume", "cut", "--no-progress", cwd=tmp_path)
    a = checkpoint.read(tmp_path / "straight", "last").model
    b = checkpoint.read(tmp_path / "cut", "last").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_attack_writes_a_robustness_report(trained):
    """`attack --json` prints the documented object; the curve starts at the clean accuracy,
    never rises with eps, and the report, curve, loss and image-grid files are written."""
    cwd, run, result = trained
    out = neuralab(
        "attack",
        str(run),
        "--method",
        "pgd",
        "--eps",
        "0.1,0,0.05",
        "--steps",
        "5",
        "--alpha",
        "0.02",
        "--n",
        "200",
        "--json",
        cwd=cwd,
    )
    report = json.loads(out.stdout)
    assert {"attack", "n", "seed", "clean_acc", "results", "images_per_s"} <= set(report)
    assert report["n"] == 200 and report["attack"] == "pgd"
    accs = [r["robust_acc"] for r in report["results"]]
    assert [r["eps"] for r in report["results"]] == [0.0, 0.05, 0.1]
    assert accs[0] == report["clean_acc"] and accs == sorted(accs, reverse=True)
    for name in (
        "attacks/pgd_linf.json",
        "plots/robustness_pgd_linf.png",
        "plots/attack_loss_pgd_linf.png",
        "plots/adversarial_pgd_linf.png",
    ):
        assert (run / name).is_file(), name
    targeted = neuralab(
        "attack",
        str(run),
        "--method",
        "pgd",
        "--norm",
        "l2",
        "--eps",
        "2",
        "--targeted",
        "--target",
        "3",
        "--n",
        "50",
        cwd=cwd,
    )
    assert "pgd_l2_target3" in targeted.stdout
    bad = neuralab("attack", str(run), "--targeted", cwd=cwd, check=False)
    assert_user_error(bad, "needs --target")


def test_check_passes_on_a_good_config_and_says_so_in_its_exit_status(tmp_path):
    """`neuralab check` runs the five pre-training checks; exit 0 means all passed."""
    proc = neuralab(
        "check", "digits_cnn", "model.widths=8,16", "--out-dir", "chk", "--json", cwd=tmp_path
    )
    out = json.loads(proc.stdout)
    assert out["passed"] and len(out["checks"]) == 5
    assert (tmp_path / "chk" / "check_inputs.png").is_file()


@pytest.mark.parametrize("method", ["grad", "integrated-gradients"])
def test_probe_saliency_writes_maps(trained, method):
    """`probe saliency` explains the chosen test images and writes the PNG; integrated
    gradients report their completeness gap (Sundararajan et al. 2017) under 1%."""
    cwd, run, _ = trained
    out = json.loads(
        neuralab(
            "probe", "saliency", str(run), "--index", "0,5", "--method", method, "--json", cwd=cwd
        ).stdout
    )
    assert out["indices"] == [0, 5] and len(out["predictions"]) == 2
    assert (run / "plots" / f"saliency_{method}.png").is_file()
    if method == "integrated-gradients":
        assert max(out["completeness_gap"]) < 0.01
    bad = neuralab("probe", "saliency", str(run), "--index", "99999", cwd=cwd, check=False)
    assert_user_error(bad, "99999")
