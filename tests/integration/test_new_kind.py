"""A new kind of run plugs in without a change to the loop or the CLI: it is registered here,
inside the test file, and trained, validated and tested through ``neuralab train``.

The toy kind tells even digits from odd ones (scikit-learn's digits, labels y mod 2) with the
registered ``mlp``. What it proves: the loop, the checkpoints, the resume and the CLI take any
``Task`` subclass in ``TASKS``; the kind alone decides data, model, loss, validation and test.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from neuralab import data
from neuralab.cli import main
from neuralab.data.batches import ImageBatches
from neuralab.models import create_model
from neuralab.seed import seed_everything
from neuralab.tasks import TASKS, Setup, Task


def _parity(split_y: torch.Tensor) -> torch.Tensor:
    return split_y % 2


class EvenOdd(Task):
    monitors = ("val/acc", "val/loss")
    num_classes = 2

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def prepare(self, cfg, run_dir, resume):
        x, y = data.load_split(cfg.data, "train")
        x_val, y_val = data.load_split(cfg.data, "val")
        seed_everything(cfg.seed)
        mean, std = data.channel_stats(x)
        model = create_model(
            "mlp", num_classes=2, in_channels=1, image_size=8, mean=mean, std=std,
            **cfg.model.options,
        )  # fmt: skip
        batches = ImageBatches(x, _parity(y), cfg.train.batch_size, cfg.seed)
        return Setup(model, batches, (x_val, _parity(y_val)), {"train/examples": len(x)})

    def loss(self, model, x, y):
        logits = model(x)
        correct = (logits.argmax(dim=1) == y).sum()
        return F.cross_entropy(logits, y), {"correct": correct, "count": torch.tensor(len(y))}

    @torch.no_grad()
    def validate(self, model, x, y, batch_size):
        model.eval()
        logits = model(x)
        model.train()
        acc = (logits.argmax(dim=1) == y).double().mean().item()
        return {"val/loss": F.cross_entropy(logits, y).item(), "val/acc": acc}

    @torch.no_grad()
    def test(self, cfg, run_dir, model, data_cfg):
        x, y = data.load_split(data_cfg, "test")
        acc = (model(x).argmax(dim=1) == _parity(y)).double().mean().item()
        return {"test/acc": acc, "test/examples": len(x)}


def neuralab(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (where the toy kind is registered): (status, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_kind_registered_in_a_test_trains_and_tests_through_the_cli(tmp_path, capsys):
    if "even_odd" not in TASKS:
        TASKS.add("even_odd", EvenOdd)
    args = ["digits_cnn", "task=even_odd", "model.name=mlp", "model.hidden=32"]
    args += ["train.max_steps=60", "train.val_every=20", "--no-progress"]
    code, out, err = neuralab(capsys, "train", *args, "--run-dir", str(tmp_path / "r"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["test/acc"] > 0.75  # chance is about 0.5
    assert result["train/steps"] == 60 and "val/acc" in result
    saved = (tmp_path / "r" / "config.toml").read_text()
    assert 'task = "even_odd"' in saved

    code, out, err = neuralab(capsys, "test", str(tmp_path / "r"), "--which", "last", "--json")
    assert code == 0, err
    assert json.loads(out)["test/step"] == 60

    missing = tmp_path / "never"
    code, _, err = neuralab(capsys, "train", "digits_cnn", "task=nope", "--run-dir", str(missing))
    assert code == 2 and "unknown task 'nope'" in err and "even_odd" in err
    assert not missing.exists()
