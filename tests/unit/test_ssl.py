"""Self-supervised learning: the NT-Xent loss, the views, label-free and exactly resumable
pretraining, and the evaluation protocol (frozen encoder, class-balanced label subsets).

Tiny models on scikit-learn's digits, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from neuralab import config, data
from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.probe import label_efficiency as label_efficiency_module
from neuralab.probe.label_efficiency import METHODS, label_efficiency, train_supervised
from neuralab.probe.linear import (
    Features,
    balanced_subset,
    linear_probe,
    linear_probe_accuracy,
    load_encoder,
)
from neuralab.ssl import extract_features, knn_predict, nt_xent
from neuralab.ssl.mae import encode_visible, patchify, random_patch_mask
from neuralab.ssl.model import build_ssl_model
from neuralab.ssl.nnclr import SupportSet, nnclr_loss
from neuralab.ssl.views import simclr_view
from neuralab.tasks import build_task
from neuralab.train import checkpoint, fit, new_run_dir

TINY = [
    "data.name=digits",
    "data.augment=false",
    "model.name=cnn",
    "model.widths=8,16",
    "train.batch_size=32",
    "train.log_every=1",
    "train.monitor=val/knn_acc",
    "ssl.hidden_dim=32",
    "ssl.proj_dim=16",
    "ssl.patch_size=2",
]


def _pretrain(tmp_path, name, method, extra=(), **kw):
    cfg = config.load(None, [*TINY, f"ssl.method={method}", *extra])
    run_dir = new_run_dir(tmp_path / name, cfg)
    return run_dir, fit(cfg, run_dir, progress=False, **kw)


def _records(run_dir):
    return (run_dir / "metrics.jsonl").read_text().splitlines()


def nt_xent_reference(z1, z2, t):
    """The loss as written in Chen et al. 2020, Alg. 1: a loop over the 2N anchors."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        sim = [torch.dot(z[i], z[k]) / t for k in range(2 * n)]
        denominator = sum(math.exp(sim[k]) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sim[partner]) / denominator)
    return total / (2 * n)


def test_nt_xent_equals_a_hand_written_reference():
    """The batched NT-Xent equals the per-anchor formula of the paper on a tiny batch (float64),
    and counts how many anchors rank their partner first."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 5, generator=g).double(), torch.randn(3, 5, generator=g).double()
    for t in (0.1, 0.5, 1.0):
        loss, correct = nt_xent(z1, z2, t)
        assert loss.item() == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-5)
        assert 0 <= int(correct) <= 6
    assert int(nt_xent(z1, z1, 0.5)[1]) == 6


def test_nt_xent_keeps_fp32_similarities_under_bf16_autocast():
    """bf16 similarities (8 bits of mantissa) move this loss by 1.4e-4 relative at
    temperature 0.1; under CPU bf16 autocast it must equal the fp32 loss to 1e-6."""
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = nt_xent(z1, z2, 0.1)[0]
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(nt_xent(z1, z2, 0.1)[0].item(), rel=1e-6)


def test_nt_xent_is_lowest_when_the_two_views_coincide():
    """Moving the second view away from the first (noise, or other images) raises the loss."""
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 16, generator=g)
    same = nt_xent(z1, z1, 0.2)[0].item()
    for scale in (0.1, 0.5, 2.0):
        assert same < nt_xent(z1, z1 + scale * torch.randn(8, 16, generator=g), 0.2)[0].item()
    assert same < nt_xent(z1, z1.roll(1, dims=0), 0.2)[0].item()


def nnclr_reference(z1, z2, queue, t):
    """NNCLR's loss as written in Dwibedi et al. 2021, Eq. 2, symmetrised: a loop over anchors,
    each the support-set row most cosine-similar to its view."""
    total = 0.0
    n = len(z1)
    for a, b in ((z1, z2), (z2, z1)):
        for i in range(n):
            sims = [torch.dot(F.normalize(a[i], dim=0), q).item() for q in queue]
            nn_i = queue[max(range(len(queue)), key=sims.__getitem__)]
            logits = [torch.dot(nn_i, F.normalize(b[k], dim=0)).item() / t for k in range(n)]
            total += -math.log(math.exp(logits[i]) / sum(math.exp(v) for v in logits))
    return total / (2 * n)


def test_nnclr_loss_equals_a_hand_written_reference():
    """The batched NNCLR loss equals the per-anchor formula of the paper on a tiny batch; the
    neighbours are constants, so only the second views get a gradient through the positives."""
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 6, generator=g, requires_grad=True)
    z2 = torch.randn(4, 6, generator=g)
    support = SupportSet(10, 6, torch.Generator().manual_seed(1))
    for t in (0.1, 0.5):
        loss, correct = nnclr_loss(z1, z2, support, t)
        reference = nnclr_reference(z1.detach(), z2, support.queue, t)
        assert loss.item() == pytest.approx(reference, rel=1e-5)
        assert 0 <= int(correct) <= 8
    loss.backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0  # as the other view of the swap


def test_nnclr_support_set_is_a_fifo_queue_that_survives_a_checkpoint():
    """Pushes overwrite the oldest rows (wrapping around) with unit vectors; state_dict and
    load_state_dict give back the same queue and position; a mis-sized one is a UserError."""
    support = SupportSet(5, 3, torch.Generator().manual_seed(0))
    first, second = torch.randn(3, 3) * 4, torch.randn(3, 3)
    support.push(first)
    support.push(second)
    assert support.ptr == 1
    assert torch.allclose(support.queue[:3], F.normalize(torch.cat([second[2:], first[1:]])))
    assert torch.allclose(support.queue[3:], F.normalize(second[:2]))
    assert torch.allclose(support.queue.norm(dim=1), torch.ones(5))
    assert torch.equal(support.nearest(first[1:2] * 7), support.queue[1:2])
    restored = SupportSet(5, 3)
    restored.load_state_dict(support.state_dict())
    assert torch.equal(restored.queue, support.queue) and restored.ptr == 1
    with pytest.raises(UserError, match="support set"):
        SupportSet(4, 3).load_state_dict(support.state_dict())


def test_nnclr_validation_leaves_the_support_set_alone():
    """Training batches refresh the support set; validating a model (eval mode) does not."""
    cfg = config.load(None, [*TINY, "ssl.method=nnclr", "ssl.support_size=64"])
    task = build_task(cfg)
    encoder = create_model("cnn", **{"widths": (8, 16), "in_channels": 1, "image_size": 8})
    model = build_ssl_model(cfg.ssl, encoder)
    x = torch.rand(16, 1, 8, 8)
    before = task.support.queue.clone()
    task.validate(model, x, torch.zeros(16, dtype=torch.long), 8)
    assert torch.equal(task.support.queue, before)
    model.train()
    task.loss(model, x, torch.zeros(16, dtype=torch.long))
    assert task.support.ptr == 16 and not torch.equal(task.support.queue, before)


def test_simclr_views_are_reproducible_in_range_and_leave_the_input_alone():
    """Same generator seed, same views; values stay in [0, 1]; two views differ; x is intact."""
    x = torch.rand(6, 1, 8, 8)
    before = x.clone()
    kw = {"crop_scale": 0.3, "strength": 0.4, "hflip": True}
    a = simclr_view(x, generator=torch.Generator().manual_seed(3), **kw)
    b = simclr_view(x, generator=torch.Generator().manual_seed(3), **kw)
    c = simclr_view(x, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(x, before)
    rgb = simclr_view(torch.rand(4, 3, 8, 8), generator=torch.Generator().manual_seed(0), **kw)
    assert rgb.shape == (4, 3, 8, 8) and rgb.min() >= 0 and rgb.max() <= 1


def test_pretraining_never_reads_labels(tmp_path, monkeypatch):
    """Shuffling the training labels leaves the pretraining loss curve, the val pretext loss
    and the final weights bit-identical: the pretext loss never reads a label."""
    steps = ["train.max_steps=12", "train.val_every=6"]
    straight, _ = _pretrain(tmp_path, "labels", "simclr", steps)
    load_split = data.load_split

    def shuffled(cfg, split):
        x, y = load_split(cfg, split)
        return x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(9))]

    monkeypatch.setattr(data, "load_split", shuffled)
    shuffled_run, _ = _pretrain(tmp_path, "shuffled", "simclr", steps)
    curve = [
        [(r["step"], r.get("train/loss"), r.get("val/loss")) for r in map(json.loads, _records(d))]
        for d in (straight, shuffled_run)
    ]
    assert curve[0] == curve[1] and len(curve[0]) == 14
    a, b = checkpoint.read(straight, "last").model, checkpoint.read(shuffled_run, "last").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def _interrupt_at(step):
    def cb(record):
        if record["step"] == step and "train/loss" in record:
            os.kill(os.getpid(), signal.SIGINT)

    return cb


@pytest.mark.parametrize("method", ["simclr", "nnclr", "mae"])
def test_pretraining_resumes_exactly(tmp_path, method):
    """N steps straight == N/2 steps, Ctrl-C, resume, N/2 steps: identical weights (encoder
    and pretext head), optimizer state and metrics log (for NNCLR: the support set too)."""
    steps = ["train.max_steps=16", "train.val_every=8"]
    straight, _ = _pretrain(tmp_path, "straight", method, steps)
    stopped, part = _pretrain(tmp_path, "stopped", method, steps, callbacks=[_interrupt_at(5)])
    assert part["status"] == "interrupted" and part["train/steps"] == 5
    cfg = config.load_run(stopped)
    assert fit(cfg, stopped, resume=True, progress=False)["train/steps"] == 16
    a, b = checkpoint.read(straight, "last"), checkpoint.read(stopped, "last")
    assert any(k.startswith("pretext.") for k in a.model)
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    sa, sb = a.state["optimizer"]["state"], b.state["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    strip = [{k: v for k, v in json.loads(r).items() if k != "train_s"} for r in _records(straight)]
    rest = [{k: v for k, v in json.loads(r).items() if k != "train_s"} for r in _records(stopped)]
    assert strip == rest


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir, summary = _pretrain(tmp_path_factory.mktemp("ssl"), "run", "dae", ["train.epochs=1"])
    assert summary["status"] == "finished" and 0 <= summary["val/knn_acc"] <= 1
    return run_dir


def test_linear_probe_never_changes_the_encoder(pretrained):
    """Features are taken in eval mode without gradients: the encoder's weights and BatchNorm
    statistics are unchanged, even when it arrives in training mode, and so is the checkpoint."""
    encoder, _ = load_encoder(pretrained)
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x, _ = data.load_split(config.load_run(pretrained).data, "train")
    extract_features(encoder, x[:100])
    assert encoder.training
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    weights = pretrained / "checkpoints" / "best" / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    result = linear_probe(pretrained, labels=0.1)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
    assert 0.3 < result["test/acc"] <= 1 and result["train/examples"] == 130
    assert (pretrained / "probes" / "linear_probe_0.1.json").is_file()


def test_a_probe_on_a_label_fraction_reads_no_label_outside_it():
    """With 10% of the labels the L2 strength is cross-validated inside the subset: scrambling
    the labels of every other training image and of the whole val split changes nothing. With
    all the labels, the val split chooses (scrambling it can change the choice)."""
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(4, 8, generator=g)
    y = torch.arange(4).repeat(100)
    f = centres[y] + torch.randn(400, 8, generator=g)
    feats = Features((f[:300], y[:300]), (f[300:350], y[300:350]), (f[350:], y[350:]))
    subset = balanced_subset(y[:300], 0.1, 0, 4)
    outside = torch.ones(300, dtype=torch.bool)
    outside[subset] = False
    scrambled_y = y[:300].clone()
    scrambled_y[outside] = torch.randint(0, 4, (int(outside.sum()),), generator=g)
    scrambled = Features((f[:300], scrambled_y), (f[300:350], y[300:350].flip(0)), feats.test)
    result = linear_probe_accuracy(feats, subset, 4)
    assert result == linear_probe_accuracy(scrambled, subset, 4)
    assert set(result) == {"test/acc", "cv/acc", "l2"} and result["test/acc"] > 0.9
    assert "val/acc" in linear_probe_accuracy(feats, torch.arange(300), 4)


def test_fine_tuning_starts_from_the_encoder_and_leaves_it_alone(pretrained):
    """Zero steps of fine-tuning give the pretrained weights everywhere but the head (freshly
    initialised from the seed, as in the scratch row); some steps change the copy, never the
    encoder; without an encoder the same call is the from-scratch baseline."""
    encoder, cfg = load_encoder(pretrained)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model_config = dataclasses.asdict(encoder.config)
    x, y = data.load_split(cfg.data, "train")
    start = train_supervised(cfg, model_config, x[:64], y[:64], 0, 3, encoder).state_dict()
    scratch = train_supervised(cfg, model_config, x[:64], y[:64], 0, 3).state_dict()
    for k, v in start.items():
        assert torch.equal(v, scratch[k] if k.startswith("head.") else before[k]), k
    tuned = train_supervised(cfg, model_config, x[:64], y[:64], 3, 3, encoder).state_dict()
    assert not torch.equal(tuned["stages.0.0.weight"], before["stages.0.0.weight"])
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_only_the_ceiling_row_reads_labels_outside_the_subset(pretrained, monkeypatch):
    """The label budget of the label-efficiency table: once the 10% subset is drawn (drawing a
    class-balanced subset reads the classes, as in every such protocol, so it is held fixed
    here), scrambling the labels of every training image outside it, and of the whole val
    split, leaves every row bit-identical except the ceiling, whose network is trained on
    every training label, and so moves."""
    load_split = data.load_split
    cfg = config.load_run(pretrained)
    train_labels = load_split(cfg.data, "train")[1]
    subset = balanced_subset(train_labels, 0.1, 0, 10)
    monkeypatch.setattr(label_efficiency_module, "balanced_subset", lambda *_: subset)

    def scrambled(data_cfg, split):
        x, y = load_split(data_cfg, split)
        if split == "test":
            return x, y
        kept = torch.zeros(len(y), dtype=torch.bool)
        if split == "train":
            kept[subset] = True
        noise = torch.randint(0, 10, y.shape, generator=torch.Generator().manual_seed(1))
        return x, torch.where(kept, y, noise)

    def table():
        return label_efficiency(pretrained, (0.1,), seeds=1, scratch_steps=5, progress=False)

    honest = table()
    assert honest["ceiling_steps"] == 5 * len(train_labels) // 128  # 5 epochs of every label
    monkeypatch.setattr(data, "load_split", scrambled)
    fooled = table()["table"]
    for method in METHODS:
        if method != "supervised_probe":
            assert fooled[method] == honest["table"][method], method
    assert fooled["supervised_probe"] != honest["table"]["supervised_probe"]


def test_load_encoder_drops_the_pretext_head(pretrained):
    """The encoder comes back as the plain registered model, with the pretrained weights."""
    encoder, cfg = load_encoder(pretrained)
    weights = checkpoint.read(pretrained, "best").model
    assert type(encoder).__name__ == "CNN" and cfg.ssl.method == "dae"
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, weights[f"encoder.{k}"])


def test_label_subsets_are_class_balanced_and_deterministic():
    """The same (fraction, seed) always gives the same indices, the same count per class;
    another seed gives another subset; fraction 1 is every label; too many is a UserError."""
    y = torch.arange(1000) % 10
    a, b = balanced_subset(y, 0.1, 0, 10), balanced_subset(y, 0.1, 0, 10)
    assert torch.equal(a, b) and len(a) == 100
    assert torch.bincount(y[a], minlength=10).tolist() == [10] * 10
    assert not torch.equal(a, balanced_subset(y, 0.1, 1, 10))
    assert torch.equal(balanced_subset(y, 1.0, 0, 10), torch.arange(1000))
    skewed = torch.cat([torch.zeros(990), torch.ones(10)]).long()
    with pytest.raises(UserError, match="class 1 has 10"):
        balanced_subset(skewed, 0.5, 0, 2)


def test_knn_predicts_from_cosine_neighbours():
    """A query takes the class of its most similar bank rows (direction, not length)."""
    bank = torch.tensor([[1.0, 0.0], [5.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    queries = torch.tensor([[10.0, 1.0], [0.2, 0.9]])
    assert knn_predict(bank, labels, queries, 2, k=2).tolist() == [0, 1]


def test_mae_on_a_vit_encodes_visible_patches_only():
    """Exactly round(ratio·P) patches are hidden; the ViT sees 1 + visible tokens; patchify
    orders patches like the ViT's tokens; the masked loss trains the encoder."""
    hidden, visible = random_patch_mask(4, 4, 0.75, torch.Generator().manual_seed(0))
    assert hidden.sum(1).tolist() == [12] * 4 and visible.shape == (4, 4)
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    assert patchify(x, 2)[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    vit = create_model("vit", image_size=8, patch_size=2, d_model=32, n_layer=1, n_heads=2)
    assert encode_visible(vit, torch.rand(4, 1, 8, 8), visible).shape == (4, 5, 32)
    ssl = ["data.augment=false", "train.monitor=val/knn_acc", "ssl.method=mae"]
    cfg = config.load(None, ["data.name=digits", "model.name=vit", *ssl])
    model = build_ssl_model(cfg.ssl, create_model("vit", image_size=8, patch_size=2, d_model=32))
    loss, _ = build_task(cfg).loss(model, torch.rand(4, 1, 8, 8), torch.zeros(4).long())
    loss.backward()
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method,model", [("mae", "vit"), ("mae", "cnn"), ("dae", "cnn")])
def test_pretext_losses_run_under_bf16_autocast(method, model):
    """precision=bf16 (or auto on a CPU with AMX or AVX512-BF16) trains every pretext task:
    the MAE decoder once scattered bf16 tokens into fp32 mask tokens and crashed. Oracle: the
    fp32 loss of the same batch and masks, which bf16 (8 bits of mantissa) matches to a few
    percent."""
    cfg = config.load(
        None,
        ["data.name=digits", f"model.name={model}", "ssl.patch_size=2", "ssl.hidden_dim=32"]
        + ["data.augment=false", "train.monitor=val/knn_acc", f"ssl.method={method}"],
    )
    torch.manual_seed(0)
    size = {"vit": {"patch_size": 2, "d_model": 32}, "cnn": {"widths": [8, 16]}}[model]
    encoder = create_model(model, image_size=8, **size)
    ssl_model = build_ssl_model(cfg.ssl, encoder)
    task, x = build_task(cfg), torch.rand(8, 1, 8, 8)
    losses = []
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = task.loss(ssl_model, x, torch.zeros(8).long())
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[1] - losses[0]) <= 0.05 * abs(losses[0])


def _check(overrides):
    cfg = config.load(None, overrides)
    build_task(cfg).check(cfg)


def test_config_rules_for_pretraining():
    """Pretraining makes its own views and is monitored by kNN: the wrong settings are
    one-line errors, before a run starts, that say what to set."""
    with pytest.raises(UserError, match="data.augment=false"):
        _check(["ssl.method=simclr", "train.monitor=val/knn_acc"])
    with pytest.raises(UserError, match="one of val/knn_acc, val/loss"):
        _check(["ssl.method=simclr", "data.augment=false"])
    with pytest.raises(UserError, match="measured by: dae, mae, nnclr, simclr"):
        _check(["train.monitor=val/knn_acc"])
    with pytest.raises(UserError, match="ssl.method"):
        config.load(None, ["ssl.method=byol"])


def test_reconstruction_pretraining_logs_no_accuracy(tmp_path):
    """DAE and MAE have no right answer to count, so their training records carry a loss and
    no train/acc (it used to be logged as a constant 0); SimCLR's (partner view ranked
    first) is kept."""
    logged = {}
    for method in ("dae", "mae", "simclr"):
        run_dir, _ = _pretrain(tmp_path, method, method, ["train.max_steps=2"])
        records = [json.loads(line) for line in _records(run_dir)]
        logged[method] = [r for r in records if "train/loss" in r]
    for method in ("dae", "mae"):
        assert logged[method] and all("train/acc" not in r for r in logged[method])
    assert all("train/acc" in r for r in logged["simclr"])
