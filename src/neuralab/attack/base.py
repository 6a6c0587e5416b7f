"""What every attack shares: argument checks, eval mode, the loss, the eps-ball and its projection.

An attack is a callable ``attack(images, labels, target=None) -> adversarial images``, as in
torchattacks. Images are in [0, 1] (normalisation is a layer inside the model), so ``eps`` is in
pixel units and every adversarial image is clipped back to [0, 1].

Two threat models: ``linf`` (each pixel moves at most eps) and ``l2`` (the whole perturbation of
one image has Euclidean length at most eps). Norms are taken per example over all of C, H, W.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.errors import UserError
from neuralab.runs import autocast_dtype

NORMS = ("linf", "l2")
PRECISIONS = ("fp32", "bf16", "auto")


def attack_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an attack's forward and backward passes (None: fp32).

    "auto" is bf16 on a CPU that computes in bf16 (AMX or AVX512-BF16) or a CUDA GPU that
    does, else fp32. An attack only needs the sign (or direction) of the input gradient, which
    bf16 keeps: the robust accuracy stays within 0.5 points of the fp32 attack's (tested).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision={precision!r} is not one of: {', '.join(PRECISIONS)}")
    return autocast_dtype(precision, device)


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer; ``fallback`` if it has neither."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return fallback if tensor is None else tensor.device


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode (BatchNorm uses and keeps its running statistics,
    dropout is off), then restore each submodule's own flag, so a frozen part stays frozen."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def channels_last_weights(model: nn.Module) -> Iterator[None]:
    """Run the block with the model's 4-D weights in channels-last memory format (the same
    values in oneDNN's fast layout for convolutions), then give back the layout each had."""
    moved = []
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.ndim == 4 and not tensor.is_contiguous(memory_format=torch.channels_last):
            moved.append(tensor)
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for tensor in moved:
            tensor.data = tensor.data.contiguous()


def per_example_norm(x: Tensor) -> Tensor:
    """(B, ...) -> (B, 1, ..., 1) L2 norms, shaped to broadcast against ``x``."""
    return x.flatten(1).norm(dim=1).view(-1, *[1] * (x.ndim - 1))


class Attack:
    """Base of FGSM and PGD: validation, mode handling and the pieces of the eps-ball geometry.

    ``__call__`` checks its arguments, puts the model in eval mode (so BatchNorm uses and keeps
    its running statistics, and dropout is off), runs ``perturb`` and restores the model's mode,
    even on error. Gradients are taken with ``torch.autograd.grad`` with respect to the input
    only, so no ``.grad`` is ever left on a parameter. The random start is drawn on the CPU from
    ``generator`` (torch's global RNG if None), so one seed gives bit-identical examples on CPU.

    Speed: images and the model's 4-D weights are in channels-last memory format during the
    attack (oneDNN's fast layout for convolutions; the values are the same, and each weight's
    layout is given back afterwards), and with ``precision`` "bf16" (or "auto" on
    hardware that computes in bf16) the model's forward and backward run under bf16 autocast;
    the loss, the steps and the projection stay fp32. The default, "fp32", is the exact path.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        *,
        norm: str = "linf",
        targeted: bool = False,
        generator: torch.Generator | None = None,
        precision: str = "fp32",
    ) -> None:
        attack_dtype(precision, torch.device("cpu"))  # a one-line error for a misspelt name
        if eps < 0:
            raise UserError(f"eps must be >= 0 (a distance in pixel units), got {eps}")
        if norm not in NORMS:
            raise UserError(f"norm={norm!r} is not one of: {', '.join(NORMS)}")
        self.model = model
        self.eps = float(eps)
        self.norm = norm
        self.targeted = targeted
        self.generator = generator
        self.precision = precision
        self.dtype: torch.dtype | None = None  # set from precision on each call's device

    def __call__(
        self, images: Tensor, labels: Tensor, target: int | Tensor | None = None
    ) -> Tensor:
        """Adversarial versions of ``images`` (B, C, H, W) in [0, 1] with true ``labels`` (B,).

        With ``targeted=True``, ``target`` (one class for all, or (B,) classes) is the class the
        attack pushes towards. Returns a detached tensor like ``images`` (shape, dtype, device);
        ``images`` itself is never modified; ``eps=0`` returns an exact copy.
        """
        if labels.shape != images.shape[:1]:
            raise UserError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if self.targeted and target is None:
            raise UserError("a targeted attack needs target= (a class or one class per image)")
        if not self.targeted and target is not None:
            raise UserError("target= was given to an untargeted attack; pass targeted=True")
        if self.eps == 0:
            return images.detach().clone()
        device = model_device(self.model, images.device)
        self.dtype = attack_dtype(self.precision, device)
        x = images.detach().to(device)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels.to(device)
        if target is not None:
            y = torch.as_tensor(target, dtype=torch.long, device=device)
            if y.ndim == 0:
                y = y.expand(len(x))
            elif y.shape != labels.shape:
                raise UserError(f"target must be one class or {len(x)} classes, got {y.shape}")
        layout = channels_last_weights(self.model) if x.ndim == 4 else contextlib.nullcontext()
        with eval_mode(self.model), layout, torch.enable_grad():  # also under no_grad
            x_adv = self.perturb(x, y)
        return x_adv.detach().to(images.device, images.dtype).contiguous()

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The attack proper: ``x`` on the model's device, ``y`` the true (or target) labels."""
        raise NotImplementedError

    def criterion(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-example cross-entropy (B,) of the raw logits; a softmax before it would saturate
        and hide the gradient."""
        return F.cross_entropy(logits, y, reduction="none")

    def loss_and_grad(self, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(per-example cross-entropy (B,), gradient of the attack objective w.r.t. x_adv).

        The objective is summed, not averaged, so each example's gradient does not depend on the
        batch it is in. Untargeted attacks ascend the true class's loss; targeted ones descend the
        target class's loss (the objective is its negative).
        """
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self.logits(x_adv)  # (B, num_classes)
        loss = self.criterion(logits, y)  # (B,)
        objective = -loss.sum() if self.targeted else loss.sum()
        (grad,) = torch.autograd.grad(objective, x_adv)
        return loss.detach(), grad

    def logits(self, x: Tensor) -> Tensor:
        """The model's fp32 outputs on ``x``, its layers under the attack's autocast dtype."""
        if self.dtype is None:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()

    def step(self, x_adv: Tensor, grad: Tensor, size: float) -> Tensor:
        """One steepest-ascent step of length ``size`` in the attack's norm.

        Linf: ``size * sign(grad)`` (Goodfellow et al. 2015). L2: ``size * grad / ||grad||``
        per example; an example with a zero gradient stays put.
        """
        if self.norm == "linf":
            return x_adv + size * grad.sign()
        return x_adv + size * grad / per_example_norm(grad).clamp_min(1e-12)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Back into the eps-ball around ``x``, then into [0, 1].

        Linf: clipping to [x - eps, x + eps] and to [0, 1] is the exact projection onto their
        intersection, and leaves a point already inside bit-for-bit unchanged. L2: the
        perturbation is rescaled to length eps if longer; clipping to [0, 1] afterwards only
        moves pixels towards ``x`` (which is in [0, 1]), so the result stays in the ball.
        """
        if self.norm == "linf":
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps)
        else:
            delta = x_adv - x
            delta = delta * (self.eps / per_example_norm(delta).clamp_min(1e-12)).clamp(max=1)
            x_adv = x + delta
        return x_adv.clamp(0, 1)

    def random_point(self, x: Tensor) -> Tensor:
        """A uniform random point of the eps-ball around ``x``, clipped to [0, 1].

        Linf: each pixel offset uniform in [-eps, eps]. L2: a direction uniform on the sphere
        (a normalised Gaussian) times a radius eps * u, u ~ U(0, 1), as torchattacks' PGDL2
        draws it. Not uniform in the ball's volume (radius eps * u^(1/d)): in d = C*H*W >= 64
        dimensions that puts nearly every start on the sphere, far from x, and such starts
        made PGD-L2 weaker than no random start at all. Drawn on the CPU from
        ``self.generator``, then moved.
        """
        shape, g = x.shape, self.generator
        if self.norm == "linf":
            delta = (torch.rand(shape, generator=g, dtype=x.dtype) * 2 - 1) * self.eps
        else:
            direction = torch.randn(shape, generator=g, dtype=x.dtype)
            direction = direction / per_example_norm(direction).clamp_min(1e-12)
            u = torch.rand(shape[0], generator=g, dtype=x.dtype).view(-1, *[1] * (x.ndim - 1))
            delta = direction * self.eps * u
        return self.project(x + delta.to(x.device), x)
