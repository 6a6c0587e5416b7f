"""Self-supervised learning from the CLI, as a user runs it: pretrain, then measure the frozen
encoder (linear-probe, knn, label-efficiency); mistakes are one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest
from conftest import require_dataset
from test_cli import assert_user_error, neuralab

TINY = [
    "data.name=digits",
    "model.widths=8,16",
    "train.batch_size=32",
    "train.log_every=5",
    "ssl.hidden_dim=32",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One short SimCLR pretraining run on digits, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("ssl_cli")
    args = ["pretrain", "fashion_simclr", *TINY, "train.max_steps=30", "--run-dir", "run"]
    out = json.loads(neuralab(*args, "--json", cwd=cwd).stdout)
    assert out["status"] == "finished" and out["train/steps"] == 30
    assert 0.2 < out["val/knn_acc"] <= 1  # 10 classes: chance is 0.1
    return cwd, cwd / "run"


def test_pretrain_then_linear_probe_and_knn_print_json_with_test_acc(pretrained):
    """Each measurement prints one JSON object with test/acc and leaves it in probes/."""
    cwd, run = pretrained
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    assert (run / "plots" / "curves.png").is_file()
    probe = json.loads(neuralab("linear-probe", "run", "--labels", "0.1", "--json", cwd=cwd).stdout)
    assert 0.3 < probe["test/acc"] <= 1 and probe["train/examples"] == 130
    near = json.loads(neuralab("knn", "run", "--k", "5", "--json", cwd=cwd).stdout)
    assert 0.3 < near["test/acc"] <= 1 and near["k"] == 5
    assert (run / "probes" / "knn.json").is_file()


def test_label_efficiency_writes_a_table_and_a_plot(pretrained):
    """Every method has mean ± std over the seeds for every fraction; the plot is written."""
    cwd, run = pretrained
    args = ["label-efficiency", "run", "--fractions", "0.1", "--seeds", "2", "--scratch-steps", "5"]
    proc = neuralab(*args, cwd=cwd)
    assert "pretrained encoder + linear probe" in proc.stdout and "±" in proc.stdout
    assert "pretrained encoder fine-tuned" in proc.stdout
    result = json.loads((run / "probes" / "label_efficiency.json").read_text())
    for method, cells in result["table"].items():
        assert len(cells["0.1"]["values"]) == 2, method
        assert cells["0.1"]["labels"] == 130
    assert (run / "plots" / "label_efficiency.png").is_file()


def test_ssl_mistakes_are_one_line_errors(pretrained):
    """Pretraining through `train` or `check`, labels through `pretrain`, augmentation left
    on, a bad fraction list, a directory that is not a run, `test` of a pretraining run."""
    cwd, _ = pretrained
    proc = neuralab("train", "fashion_simclr", *TINY, cwd=cwd, check=False)
    assert_user_error(proc, "neuralab pretrain")
    proc = neuralab("pretrain", "digits_cnn", cwd=cwd, check=False)
    assert_user_error(proc, "set ssl.method")
    proc = neuralab("pretrain", "fashion_simclr", "data.augment=true", cwd=cwd, check=False)
    assert_user_error(proc, "data.augment=false")
    proc = neuralab("label-efficiency", "run", "--fractions", "a,b", cwd=cwd, check=False)
    assert_user_error(proc, "--fractions")
    proc = neuralab("linear-probe", ".", cwd=cwd, check=False)
    assert_user_error(proc, "not a neuralab run directory")
    proc = neuralab("test", "run", cwd=cwd, check=False)
    assert_user_error(proc, "neuralab linear-probe run")
    proc = neuralab("check", "fashion_simclr", "data.name=digits", cwd=cwd, check=False)
    assert_user_error(proc, "neuralab pretrain")


def test_pretrain_refuses_several_processes(pretrained, monkeypatch):
    """Started by torchrun with two processes, pretraining is a one-line error before any run
    directory is made (it ran into the directory the other rank had just made, before)."""
    cwd, _ = pretrained
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    proc = neuralab("pretrain", "fashion_simclr", *TINY, "--run-dir", "two", cwd=cwd, check=False)
    assert_user_error(proc, "without torchrun")
    assert not (cwd / "two").exists()


@pytest.mark.data
def test_simclr_on_fashion_mnist_learns_features(tmp_path):
    """A minute of SimCLR on real Fashion-MNIST already beats chance by far in kNN."""
    require_dataset("fashion-mnist")
    args = ["pretrain", "fashion_simclr", "model.widths=8,16,32", "train.max_steps=40"]
    args += ["ssl.knn_bank=2000", "--run-dir", "run", "--json"]
    out = json.loads(neuralab(*args, cwd=tmp_path).stdout)
    assert out["val/knn_acc"] > 0.5
