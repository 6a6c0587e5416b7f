"""The batches of training, each a pure function of the step.

Batch ``s`` depends only on (seed, s), never on a generator that has been running since the
start, so a resumed run needs nothing but its step to continue the data order exactly.

- ``ImageBatches``: a fresh permutation of the training images each epoch, augmented.
- ``RandomWindows``: windows of a text at random offsets (nanoGPT's ``get_batch``).
- ``Streams``: the text cut into B contiguous streams read T tokens at a time, for truncated
  backpropagation through time with the hidden state carried from one chunk to the next
  (Karpathy's char-rnn; Williams & Peng 1990).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from neuralab.data.transforms import augment
from neuralab.errors import UserError
from neuralab.seed import derived_generator


class Batch(NamedTuple):
    """Inputs, targets, and whether carried state is stale (a new pass over the streams)."""

    x: Tensor
    y: Tensor
    fresh: bool = False


class ImageBatches:
    """Batches of a permutation of (x, y) drawn from (seed, epoch); augmentation from
    (seed, step). The last partial batch of an epoch is dropped."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        seed: int,
        *,
        augment: bool = False,
        crop_pad: int = 0,
        hflip: bool = False,
    ) -> None:
        self.x, self.y, self.seed = x, y, seed
        self.batch_size = min(batch_size, len(x))
        self.steps_per_epoch = len(x) // self.batch_size
        self.augment, self.crop_pad, self.hflip = augment, crop_pad, hflip
        self._perm, self._epoch = None, -1

    def indices(self, step: int) -> Tensor:
        """The examples of batch ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            gen = derived_generator(self.seed, epoch)
            self._perm, self._epoch = torch.randperm(len(self.x), generator=gen), epoch
        return self._perm[i * self.batch_size : (i + 1) * self.batch_size]

    def get(self, step: int) -> Batch:
        idx = self.indices(step)
        xb = self.x[idx]
        if self.augment:
            gen = derived_generator(self.seed, step, 1)
            xb = augment(xb, generator=gen, crop_pad=self.crop_pad, hflip=self.hflip)
        return Batch(xb, self.y[idx])


def bucket_order(lengths: Tensor, batch_size: int, window: int, gen: torch.Generator) -> Tensor:
    """A permutation drawn from ``gen`` in which each run of ``batch_size`` examples has
    similar ``lengths`` (little padding): the examples are sorted by length within windows of
    ``window`` batches, and the batches of each window shuffled. A window's remainder short
    of a batch goes to the end, where an epoch's last partial batch is dropped."""
    perm = torch.randperm(len(lengths), generator=gen)
    order, rest = [], []
    for start in range(0, len(perm), window * batch_size):
        chunk = perm[start : start + window * batch_size]
        batches = list(chunk[lengths[chunk].argsort(stable=True)].split(batch_size))
        if len(batches[-1]) < batch_size:
            rest.append(batches.pop())
        order += [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]
    return torch.cat(order + rest)


def _check_length(tokens: Tensor, needed: int, what: str) -> None:
    if len(tokens) < needed:
        raise UserError(
            f"the training text has {len(tokens)} tokens, too few for {what}; "
            "lower train.batch_size or model.block_size, or use a longer text"
        )


class RandomWindows:
    """``batch_size`` windows of ``block_size`` + 1 tokens at offsets drawn from (seed, step):
    x = window[:-1], y = window[1:]. An "epoch" is len(tokens) / (batch_size·block_size)
    steps, the steps that draw as many targets as the text has tokens."""

    def __init__(self, tokens: Tensor, batch_size: int, block_size: int, seed: int) -> None:
        _check_length(tokens, block_size + 2, f"one window of model.block_size={block_size}")
        self.windows = tokens.unfold(0, block_size + 1, 1)  # (N - T, T + 1), a view
        self.batch_size, self.block_size, self.seed = batch_size, block_size, seed
        self.steps_per_epoch = max(1, (len(tokens) - 1) // (batch_size * block_size))

    def get(self, step: int) -> Batch:
        gen = derived_generator(self.seed, step, 2)
        offsets = torch.randint(len(self.windows), (self.batch_size,), generator=gen)
        w = self.windows[offsets]  # (B, T + 1)
        return Batch(w[:, :-1], w[:, 1:])


class Streams:
    """The text as ``batch_size`` contiguous streams, read ``block_size`` tokens per step.

    Step s reads chunk s mod steps_per_epoch of every stream, so row b of one batch continues
    row b of the previous one and a recurrent model can carry its hidden state across
    (detached: gradients flow back ``block_size`` steps only). Each pass starts fresh.
    """

    def __init__(self, tokens: Tensor, batch_size: int, block_size: int) -> None:
        _check_length(
            tokens,
            batch_size * (block_size + 1),
            f"{batch_size} streams of model.block_size={block_size}",
        )
        length = (len(tokens) - 1) // batch_size
        self.x = tokens[: batch_size * length].view(batch_size, length)
        self.y = tokens[1 : batch_size * length + 1].view(batch_size, length)
        self.batch_size, self.block_size = batch_size, block_size
        self.steps_per_epoch = length // block_size

    def get(self, step: int) -> Batch:
        k = step % self.steps_per_epoch
        cols = slice(k * self.block_size, (k + 1) * self.block_size)
        return Batch(self.x[:, cols], self.y[:, cols], fresh=k == 0)
