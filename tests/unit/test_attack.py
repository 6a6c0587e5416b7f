"""Tests of neuralab.attack: the eps-ball and [0, 1] constraints, an FGSM oracle in float64,
monotone robustness curves, determinism, and that attacks leave the model and input untouched.

Everything is tiny (8x8 digits, an MLP trained for well under a second) and runs on one thread.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import neuralab
from neuralab import data
from neuralab.attack import FGSM, PGD, robust_accuracy, robustness_curve
from neuralab.errors import UserError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads; one keeps the tests light on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP trained on digits (full batch, 150 Adam steps) and 64 test images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    fit_digits(model, 150)
    x_test, y_test = data.load("digits", "test")
    return model.eval(), x_test[:64], y_test[:64]


def fit_digits(model: nn.Module, steps: int) -> None:
    """Full-batch Adam (lr 1e-2) on digits' training split; no gradient left behind."""
    x, y = data.load("digits", "train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return neuralab.create_model("cnn", widths=(4, 8), image_size=8, num_classes=5)


def random_batch(n: int = 16, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, :2] = 0.0  # pixels at the edges of [0, 1], where clipping must act
    x[:, :, -2:] = 1.0
    return x, torch.randint(0, classes, (n,), generator=g)


def attacks(eps: float, norm: str = "linf") -> list:
    model = small_cnn()
    return [
        FGSM(model, eps, norm=norm),
        FGSM(model, eps, norm=norm, random_start=True),
        PGD(model, eps, eps / 4, 5, norm=norm, random_start=True, restarts=2),
    ]


def test_eps_zero_is_identity(trained) -> None:
    """eps = 0 returns an exact copy of the input (a new tensor), and robust accuracy then equals
    clean accuracy."""
    model, x, y = trained
    clean = (model(x).argmax(1) == y).float().mean().item()
    for attack in [FGSM(model, 0.0), PGD(model, 0.0, 0.01, 3)]:
        x_adv = attack(x, y)
        assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()
        assert robust_accuracy(model, x, y, attack)[0] == clean


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_within_eps_ball_and_unit_box(norm: str) -> None:
    """Every adversarial example of FGSM (with and without random start) and PGD lies within eps
    of its input in the attack's norm and inside [0, 1], with the input's shape and dtype."""
    x, y = random_batch()
    eps = 0.1 if norm == "linf" else 1.0
    for attack in attacks(eps, norm):
        x_adv = attack(x, y)
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
        delta = (x_adv - x).flatten(1)
        dist = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
        assert (dist <= eps + 1e-6).all(), f"{type(attack).__name__}: {dist.max()}"
        assert dist.max() > 0.5 * eps, "the attack did not move"
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_curve_is_monotone_and_large_eps_breaks_the_model(trained) -> None:
    """robustness_curve reports robust accuracy that never increases with eps (eps given out of
    order), starts at clean accuracy at eps 0, and a Linf budget of 1.0 (any image at all)
    drives the accuracy of a well-trained model to about 0."""
    model, x, y = trained
    curve = robustness_curve(
        model, x, y, lambda e: PGD(model, e, max(e, 1e-3) / 4, 10), [0.1, 0.0, 1.0, 0.05, 0.2]
    )
    accs = [r["robust_acc"] for r in curve["results"]]
    assert [r["eps"] for r in curve["results"]] == [0.0, 0.05, 0.1, 0.2, 1.0]
    assert curve["n"] == 64 and curve["seed"] == 0 and curve["images_per_s"] > 0
    assert curve["clean_acc"] > 0.9
    assert accs[0] == curve["clean_acc"]
    assert all(a >= b for a, b in itertools.pairwise(accs))
    assert accs[-1] <= 0.05


def test_pgd_at_least_as_strong_as_fgsm(trained) -> None:
    """On the same model and eps, PGD's robust accuracy is no higher than FGSM's."""
    model, x, y = trained
    eps = 0.1
    fgsm = robust_accuracy(model, x, y, FGSM(model, eps))[0]
    pgd = robust_accuracy(model, x, y, PGD(model, eps, eps / 4, 20))[0]
    assert pgd <= fgsm < 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_matches_hand_computed_step_on_linear_model(norm: str) -> None:
    """Oracle, in float64: for logits Wx + b, grad_x CE = W^T (softmax(Wx + b) - onehot(y)), and
    FGSM must equal clip(x + eps * sign(grad), 0, 1) (Linf) or clip(x + eps * grad/||grad||, 0, 1)
    (L2), computed here by hand from the weights."""
    torch.manual_seed(0)
    d, k, eps = 12, 4, 0.2
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double()
    x = torch.rand(6, 1, 3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    w, b = model[1].weight.detach(), model[1].bias.detach()
    flat = x.flatten(1)  # (B, d)
    probs = torch.softmax(flat @ w.T + b, dim=1)  # (B, k)
    grad = (probs - F.one_hot(y, k).double()) @ w  # (B, d): row-wise W^T (p - onehot)
    if norm == "linf":
        step = eps * grad.sign()
    else:
        step = eps * grad / grad.norm(dim=1, keepdim=True)
    expected = (flat + step).clamp(0, 1).view_as(x)
    x_adv = FGSM(model, eps, norm=norm)(x, y)
    assert x_adv.dtype == torch.float64
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "make", [lambda m: FGSM(m, 0.1), lambda m: PGD(m, 0.1, 0.02, 8, random_start=False)]
)
def test_batch_size_does_not_change_results(trained, make) -> None:
    """robust_accuracy gives the same per-example mask with batches of 7 as with one batch of 64
    (the attack objective is summed, so no example's gradient depends on its batch)."""
    model, x, y = trained
    acc7, mask7 = robust_accuracy(model, x, y, make(model), batch_size=7)
    acc64, mask64 = robust_accuracy(model, x, y, make(model), batch_size=64)
    assert torch.equal(mask7, mask64) and acc7 == acc64
    assert 0 < acc64 < 1  # a mask of all True or all False would prove nothing


def test_same_seed_gives_bit_identical_examples() -> None:
    """PGD with a random start drawn from generators with the same seed gives bit-identical
    adversarial examples on CPU; another seed gives different ones."""
    x, y = random_batch()
    model = small_cnn()
    runs = [
        PGD(model, 0.1, 0.02, 3, generator=torch.Generator().manual_seed(s))(x, y)
        for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_attack_leaves_model_and_input_untouched() -> None:
    """After FGSM and PGD: a model in train mode is still in train mode (and a submodule frozen in
    eval mode still is), BatchNorm running_mean/var/num_batches_tracked and all weights are
    identical, no parameter has a .grad, and the input tensor is unchanged."""
    model = small_cnn()
    x, y = random_batch()
    model.train()
    model(x)  # non-trivial running statistics
    frozen = model.stages[1][1]  # a BatchNorm2d
    frozen.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_before = x.clone()
    for attack in [FGSM(model, 0.1, random_start=True), PGD(model, 0.1, 0.02, 3)]:
        attack(x, y)
    assert model.training and model.stages[0][1].training and not frozen.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(x, x_before)


def test_loss_receives_raw_logits(monkeypatch) -> None:
    """The cross-entropy is fed the model's raw logits (rows do not sum to 1), not probabilities:
    a softmax first would saturate and hide the gradient."""
    model = small_cnn().eval()
    x, y = random_batch()
    seen = []
    real = F.cross_entropy

    def spy(logits, target, **kwargs):
        seen.append(logits.detach().clone())
        return real(logits, target, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    FGSM(model, 0.1)(x, y)
    assert len(seen) == 1
    with torch.no_grad():
        torch.testing.assert_close(seen[0], model(x))
    assert not torch.allclose(seen[0].sum(dim=1), torch.ones(len(x)))


def test_targeted_pgd_reaches_the_target(trained) -> None:
    """Targeted PGD with a large budget makes most predictions equal the target, given as one
    class or one class per image, and its recorded target loss falls."""
    model, x, y = trained
    attack = PGD(model, 0.5, 0.05, 20, targeted=True)
    for target in [3, (y + 1) % 10]:
        pred = model(attack(x, y, target=target)).argmax(1)
        hit = (pred == torch.as_tensor(target).expand_as(y)).float().mean().item()
        assert hit >= 0.9
    assert attack.losses[0][-1] < attack.losses[0][0]


def test_restarts_keep_the_worst_case(trained) -> None:
    """With the same seed, restart 2 of a 3-restart PGD (its first random start; restart 1
    starts at x) is the 1-restart PGD, and the worst case is kept per example: every example
    broken by 1 restart stays broken, the others end with a loss at least as high, and here
    the extra restarts break more examples. The loss of every step of every restart is
    recorded."""
    model, x, y = trained
    runs = {}
    for restarts in (1, 3):
        attack = PGD(model, 0.08, 0.01, 1, restarts=restarts, generator=torch.Generator())
        attack.generator.manual_seed(0)
        x_adv = attack(x, y)
        with torch.no_grad():
            logits = model(x_adv)
        loss = F.cross_entropy(logits, y, reduction="none")
        runs[restarts] = attack, logits.argmax(1) == y, loss
    (one, correct1, loss1), (three, correct3, loss3) = runs[1], runs[3]
    assert not (correct3 & ~correct1).any()
    assert correct3.sum() < correct1.sum()
    unbroken = correct1 & correct3
    assert (loss3[unbroken] >= loss1[unbroken]).all()
    assert len(one.losses) == 1 and len(three.losses) == 3
    assert all(len(curve) == 2 for curve in three.losses)  # steps + 1: the start, then each step
    assert three.losses[1] == one.losses[0]


def test_user_errors() -> None:
    """Mistakes are one-line UserErrors: targeted without target, target without targeted,
    negative eps, unknown norm, alpha <= 0, steps < 1, restarts without a random start."""
    model = small_cnn()
    x, y = random_batch()
    with pytest.raises(UserError, match="target"):
        PGD(model, 0.1, 0.01, 3, targeted=True)(x, y)
    with pytest.raises(UserError, match="targeted=True"):
        FGSM(model, 0.1)(x, y, target=1)
    with pytest.raises(UserError, match="eps"):
        FGSM(model, -0.1)
    with pytest.raises(UserError, match="norm"):
        PGD(model, 0.1, 0.01, 3, norm="l1")
    with pytest.raises(UserError, match="alpha"):
        PGD(model, 0.1, 0.0, 3)
    with pytest.raises(UserError, match="alpha"):
        FGSM(model, 0.1, alpha=-1.0)
    with pytest.raises(UserError, match="steps"):
        PGD(model, 0.1, 0.01, 0)
    with pytest.raises(UserError, match="random_start"):
        PGD(model, 0.1, 0.01, 3, random_start=False, restarts=2)


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("l2", 1.0), ("linf", 0.05)])
def test_random_start_with_restarts_is_never_weaker_than_no_random_start(trained, norm, eps):
    """On a trained model, every example robust to PGD with a random start and restarts is
    robust to PGD without a random start: the first restart starts at x itself. (PGD-L2's
    radius was once drawn uniform in the ball's volume, almost always ~eps in 64 dimensions,
    which made it weaker than no random start.)"""
    model, x, y = trained
    alpha, steps = 2.5 * eps / 20, 20
    plain = PGD(model, eps, alpha, steps, norm=norm, random_start=False)
    g = torch.Generator().manual_seed(0)
    restarts = PGD(model, eps, alpha, steps, norm=norm, restarts=3, generator=g)
    acc_plain, robust_plain = robust_accuracy(model, x, y, plain)
    acc_restarts, robust_restarts = robust_accuracy(model, x, y, restarts)
    assert acc_restarts <= acc_plain
    assert not (robust_restarts & ~robust_plain).any()


def test_l2_random_start_radius_is_uniform_in_zero_to_eps():
    """torchattacks' PGDL2 draw: radius eps * u, u ~ U(0, 1) (mean eps / 2), not eps * u^(1/d)
    (mean ~eps in d = 64 dimensions)."""
    x = torch.full((4000, 1, 8, 8), 0.5)
    attack = PGD(nn.Identity(), 0.4, 0.1, 1, norm="l2", generator=torch.Generator().manual_seed(0))
    radius = (attack.random_point(x) - x).flatten(1).norm(dim=1)
    assert radius.max() <= 0.4 + 1e-6
    assert radius.mean().item() == pytest.approx(0.2, abs=0.01)


@pytest.fixture(scope="module")
def trained_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The registry's CNN trained on digits' training split (full batch, 200 Adam steps), and
    all 1,797 digits to attack (1 image = 0.06 points of accuracy; with only the 360 test
    images, bf16's rounding moves about 1% of the outcomes each way and the net difference is
    at the grain of a single image)."""
    torch.manual_seed(0)
    model = neuralab.create_model("cnn", widths=(8, 16), image_size=8, num_classes=10)
    fit_digits(model, 200)
    x, y = data.load("digits", "train")
    x_test, y_test = data.load("digits", "test")
    return model.eval(), torch.cat([x, x_test]), torch.cat([y, y_test])


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_bf16_attack_is_as_strong_as_fp32(trained_cnn, method: str) -> None:
    """The fast path (bf16 autocast; channels-last in both) against the exact fp32 attack on
    the same images and seed: robust accuracy within 0.5 points at every eps of a curve that
    goes from mostly robust to broken, so the curve's informative middle is compared too.
    Measured here: PGD-20 differs by at most 0.37 points (at eps 0.1, where fp32 PGD itself
    moves 1.2 points from one seed of random starts to the next); FGSM by 0.18."""
    model, x, y = trained_cnn

    def curve(precision: str) -> list[float]:
        def make(eps: float):
            if method == "fgsm":
                return FGSM(model, eps, precision=precision)
            return PGD(model, eps, 2.5 * eps / 20, 20, random_start=True, precision=precision)

        got = robustness_curve(model, x, y, make, [0.02, 0.05, 0.1, 0.2], seed=0)
        return [r["robust_acc"] for r in got["results"]]

    fp32, bf16 = curve("fp32"), curve("bf16")
    assert fp32[0] > 0.5 and fp32[-1] < 0.3  # the curve spans robust to broken
    assert all(abs(a - b) <= 0.005 for a, b in zip(fp32, bf16, strict=True)), (fp32, bf16)


def test_precision_auto_means_bf16_only_where_the_cpu_computes_in_bf16(monkeypatch) -> None:
    from neuralab import runs
    from neuralab.attack import base

    for native, want in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(runs, "cpu_computes_bf16", lambda v=native: v)
        assert base.attack_dtype("auto", torch.device("cpu")) == want
    assert base.attack_dtype("fp32", torch.device("cpu")) is None
    with pytest.raises(UserError, match="precision='fp16' is not one of"):
        PGD(nn.Linear(2, 2), 0.1, 0.01, 1, precision="fp16")


def test_channels_last_during_the_attack_gives_each_weight_its_layout_back() -> None:
    """The attack runs the convolutions on channels-last weights, then every weight has its
    own layout and values again (a model kept channels-last stays so)."""
    model = small_cnn()
    convs = [p for p in model.parameters() if p.ndim == 4]
    before = [p.detach().clone() for p in convs]
    x, y = random_batch()
    PGD(model, 0.1, 0.02, 2)(x, y)
    assert all(p.is_contiguous() and torch.equal(p, b) for p, b in zip(convs, before, strict=True))
    model.to(memory_format=torch.channels_last)
    PGD(model, 0.1, 0.02, 2)(x, y)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
