"""Adversarial training: TRADES' inner maximisation, the training losses, the
catastrophic-overfitting monitor, configs, and exact resume of adversarial runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_train import _interrupt_at, _run

from neuralab import config, create_model
from neuralab.errors import UserError
from neuralab.tasks import ClassifyTask, build_task
from neuralab.tasks.adversarial import AdversarialTask, catastrophic_overfitting, trades_example
from neuralab.train import checkpoint, fit


def _model():
    torch.manual_seed(0)
    return create_model("cnn", widths=(4, 8), image_size=8)


def test_trades_example_stays_in_the_ball_and_leaves_the_model_alone():
    """x' is within eps of x in Linf and inside [0, 1]; the model's mode, BatchNorm statistics
    and parameter gradients are untouched."""
    model = _model().train()
    x = torch.rand(16, 1, 8, 8)
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x_adv = trades_example(model, x, eps=0.1, alpha=0.03, steps=5)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    bn_after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(bn_before[k], bn_after[k]) for k in bn_before)


@pytest.mark.parametrize("method", ["pgd", "fgsm"])
def test_adversarial_loss_is_taken_on_attacked_inputs(method):
    """The training loss of PGD-AT / fast AT is the loss on attacked inputs: higher than the
    clean loss of the same batch (the attacks ascend it)."""
    model = _model().eval()
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    adv = config.AdvConfig(method=method, eps=0.2, steps=5)
    clean_loss, _ = ClassifyTask(10).loss(model, x, y)
    adv_loss, _ = AdversarialTask(10, adv).loss(model, x, y)
    assert adv_loss.item() > clean_loss.item()


def test_trades_loss_is_clean_ce_plus_beta_kl():
    """With beta = 0, TRADES reduces to the clean cross-entropy."""
    model = _model().eval()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    task = AdversarialTask(10, config.AdvConfig(method="trades", trades_beta=0.0, steps=2))
    loss, _ = task.loss(model, x, y)
    clean, _ = ClassifyTask(10).loss(model, x, y)
    assert loss.item() == pytest.approx(clean.item(), rel=1e-6)


def test_catastrophic_overfitting_signature():
    """Warn only when PGD accuracy collapses below half its best while FGSM accuracy rises."""
    assert catastrophic_overfitting(best_robust=0.6, robust=0.1, last_fgsm=0.5, fgsm=0.8)
    assert not catastrophic_overfitting(0.6, 0.1, 0.5, 0.4)  # FGSM fell too: plain divergence
    assert not catastrophic_overfitting(0.6, 0.5, 0.5, 0.8)  # no collapse
    assert not catastrophic_overfitting(0.1, 0.0, 0.5, 0.8)  # never robust to begin with
    assert not catastrophic_overfitting(0.6, 0.1, None, 0.8)  # first validation


def test_build_task_and_monitor_config():
    assert type(build_task(config.load(None))) is ClassifyTask
    task = build_task(config.load(None, ["adv.method=trades"]))
    assert isinstance(task, AdversarialTask) and task.alpha == pytest.approx(2.5 * 0.1 / 7)
    cfg = config.load(None, ["train.monitor=val/robust_acc"])
    with pytest.raises(UserError, match="measured by: adversarial"):
        build_task(cfg).check(cfg)
    with pytest.raises(UserError, match="must be one of none, pgd, fgsm, trades"):
        config.load(None, ["adv.method=madry"])


def test_adversarial_run_validates_robustness_and_resumes_exactly(tmp_path):
    """A fast-AT run logs val/robust_acc and val/fgsm_acc, keeps the best-robust checkpoint,
    and a Ctrl-C + resume gives bit-identical parameters (the random starts come from the
    global RNG, which checkpoints save)."""
    adv = [
        "adv.method=fgsm",
        "adv.val_n=64",
        "train.monitor=val/robust_acc",
        "train.max_steps=50",
        "train.ema=0",
    ]
    _, straight, done = _run(tmp_path, "straight", adv)
    assert "val/robust_acc" in done and "val/acc" in done
    cfg, cut, part = _run(tmp_path, "cut", adv, callbacks=[_interrupt_at(45)])
    assert part["status"] == "interrupted"
    fit(cfg, cut, resume=True, progress=False)
    a, b = checkpoint.read(straight, "last").model, checkpoint.read(cut, "last").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trades_inner_attack_is_the_authors_loop():
    """Oracle: the inner maximisation of the authors' trades.py, written out here step by step
    (start x + 0.001·N(0, 1) with no clipping, then per step: the summed KL against the clean
    softmax, a signed step, projection onto the eps-ball, then onto [0, 1]). Images with pixels
    at exactly 0 and 1, where clipping the start would differ, give bit-equal examples."""
    model = _model().eval()
    x = torch.rand(16, 1, 8, 8)
    x[:, :, :3] = 0.0
    x[:, :, -3:] = 1.0
    eps, alpha, steps = 0.1, 0.03, 5
    torch.manual_seed(7)
    ours = trades_example(model, x, eps, alpha, steps)
    torch.manual_seed(7)
    x_adv = x.detach() + 0.001 * torch.randn(x.shape)
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            kl = torch.nn.KLDivLoss(reduction="sum")(
                F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)
            )
        grad = torch.autograd.grad(kl, [x_adv])[0]
        x_adv = x_adv.detach() + alpha * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    assert torch.equal(ours, x_adv)


def test_adversarial_task_needs_no_default_step_when_alpha_is_given():
    """alpha given and steps=0 (a direct construction; configs refuse steps < 1): no division
    by zero computing a default step size that is not used."""
    task = AdversarialTask(10, config.AdvConfig(method="pgd", alpha=0.02, steps=0))
    assert task.alpha == 0.02
