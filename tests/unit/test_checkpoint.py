"""Checkpoints: atomic writes, and never running code from a file we are handed."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from neuralab.errors import UserError
from neuralab.train import checkpoint


class _Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_good(root, step=1):
    path = checkpoint.write(
        root,
        step,
        model={"w": torch.ones(2)},
        state={"optimizer": {}, "step": torch.tensor(step)},
        meta={"progress": {"step": step}},
    )
    checkpoint.point(root, "last", path)
    return path


def test_round_trip(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    _write_good(root)
    ckpt = checkpoint.read(tmp_path / "run", "last")
    assert torch.equal(ckpt.model["w"], torch.ones(2)) and ckpt.meta["progress"]["step"] == 1


@pytest.mark.parametrize("target", ["state.pt", "model.safetensors"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, target):
    """A pickle whose __reduce__ would run a shell command, put where a checkpoint file
    belongs, is refused with a UserError and the command never runs."""
    root = tmp_path / "run" / "checkpoints"
    path = _write_good(root)
    marker = tmp_path / "pwned"
    with open(path / target, "wb") as f:
        pickle.dump(_Exploit(marker), f, protocol=2)
    with pytest.raises(UserError, match="refusing|not a valid safetensors"):
        checkpoint.read(tmp_path / "run", "last")
    assert not marker.exists()


def test_torch_save_of_a_pickled_object_is_refused(tmp_path):
    """Even a file written by torch.save is refused if it holds an arbitrary object."""
    root = tmp_path / "run" / "checkpoints"
    path = _write_good(root)
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Exploit(marker)}, path / "state.pt")
    with pytest.raises(UserError, match="refusing") as err:
        checkpoint.read(tmp_path / "run", "last")
    assert not marker.exists()
    # the refusal never invites the unsafe step (PyTorch's own message suggests it)
    assert "weights_only" not in str(err.value) and "will not be loaded" in str(err.value)


def test_foreign_weights_say_which_keys_and_shapes_differ(tmp_path):
    """Weights of another model, or of this one with other options, are one line naming the
    keys that are missing, unexpected or of another shape (PyTorch's message stops at
    "Error(s) in loading state_dict")."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    foreign = {"0.weight": torch.zeros(5, 4), "0.bias": torch.zeros(5), "2.weight": torch.zeros(2)}
    with pytest.raises(UserError) as err:
        checkpoint.load_weights(model, foreign, tmp_path / "ckpt")
    message = str(err.value)
    assert "\n" not in message
    assert "missing: 1.weight, 1.bias" in message and "unexpected: 2.weight" in message
    assert "0.weight (5, 4) vs (3, 4)" in message
    checkpoint.load_weights(model, model.state_dict(), tmp_path / "ckpt")  # its own: fine


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """If writing a new checkpoint fails half-way (a full disk: torch.save raises a
    RuntimeError there), `last` still points at the old, complete one, no partial directory is
    left behind, and the user reads one line that says so."""
    root = tmp_path / "run" / "checkpoints"
    _write_good(root, step=1)

    def boom(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed")

    monkeypatch.setattr(checkpoint.torch, "save", boom)
    with pytest.raises(UserError, match="disk full.*previous checkpoint is intact"):
        checkpoint.write(root, 2, model={"w": torch.zeros(2)}, state={}, meta={})
    assert checkpoint.read(tmp_path / "run", "last").meta["progress"]["step"] == 1
    assert sorted(p.name for p in root.iterdir()) == ["last", "step-000001"]


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no 'best' checkpoint"):
        checkpoint.read(tmp_path, "best")


def test_prune_keeps_last_and_best(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        p = _write_good(root, step)
        if step == 2:
            checkpoint.point(root, "best", p)
    checkpoint.prune(root)
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000002", "step-000003"]


def test_a_classifier_starts_from_a_language_models_weights(tmp_path):
    """train.init_from: every tensor of a GPT language model's best checkpoint lands in the
    text_gpt of the same options (its own head stays as initialised, and it trains); a
    text_gpt of another width is refused in one line naming the shapes."""
    from neuralab.models import create_model

    options = dict(vocab_size=40, block_size=16, n_layer=1, n_heads=2, d_model=8)
    torch.manual_seed(0)
    lm = create_model("gpt", **options)
    root = tmp_path / "lm" / "checkpoints"
    step = checkpoint.write(root, 1, model=lm.state_dict(), state={},
                            meta={"model": {"name": "gpt", "config": options}})  # fmt: skip
    checkpoint.point(root, "best", step)
    torch.manual_seed(1)
    classifier = create_model("text_gpt", num_classes=3, max_tokens=16, **options)
    head = classifier.classifier.weight.detach().clone()
    assert checkpoint.start_from(classifier, tmp_path / "lm") == len(lm.state_dict())
    for name, tensor in lm.state_dict().items():
        torch.testing.assert_close(classifier.state_dict()[name], tensor)
    torch.testing.assert_close(classifier.classifier.weight, head)
    classifier(torch.randint(2, 40, (2, 5))).sum().backward()
    assert classifier.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    wider = create_model("text_gpt", num_classes=3, max_tokens=16, **{**options, "d_model": 16})
    with pytest.raises(UserError, match=r"^train.init_from=.*its gpt does not fit .* vs \(16,"):
        checkpoint.start_from(wider, tmp_path / "lm")
