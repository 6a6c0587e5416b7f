"""Reading a CTC model's output (Graves et al. 2006): label 0 is the blank.

A labelling is read from a path of per-step labels by the map B: merge runs of the same
label, then drop the blanks ("a a - a b" → "a a b" needs the blank between the two a's).

- ``greedy_decode``: B of the best path, the argmax at every step. Fast, but the most
  probable path need not give the most probable labelling, which sums over all its paths.
- ``prefix_beam_search``: keeps the ``beam`` most probable labellings (prefixes) after each
  step, each with the probability of its paths that end in a blank and in its last label,
  so that a label repeated after a blank starts a new word and one repeated without a blank
  merges (Hannun et al. 2014, without a language model). Exact for a beam as wide as the
  number of prefixes.
- ``check_lengths``: a labelling of L labels with R adjacent repeats needs at least L + R
  steps; fewer is a one-line error, where ``F.ctc_loss`` would give inf.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from neuralab.errors import UserError

BLANK = 0


def collapse(path: list[int]) -> list[int]:
    """B: runs merged, blanks dropped."""
    out, previous = [], BLANK
    for label in path:
        if label != previous and label != BLANK:
            out.append(label)
        previous = label
    return out


def greedy_decode(logits: Tensor, lengths: Tensor) -> list[list[int]]:
    """The labelling of each utterance's best path, over its first ``lengths[b]`` steps of
    (B, T, V) scores."""
    best = logits.argmax(-1).tolist()
    return [collapse(row[:n]) for row, n in zip(best, lengths.tolist(), strict=True)]


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high = max(a, b)
    return high + math.log1p(math.exp(-abs(a - b)))


def _adder(table: dict[tuple[int, ...], list[float]]):
    """``add(prefix, blank, label)``: log-add the two path probabilities into ``table``."""

    def add(prefix: tuple[int, ...], blank: float, label: float) -> None:
        old = table.setdefault(prefix, [-math.inf, -math.inf])
        old[0], old[1] = _logsumexp(old[0], blank), _logsumexp(old[1], label)

    return add


def prefix_beam_search(log_probs: np.ndarray, beam: int = 8) -> tuple[list[int], float]:
    """(the most probable labelling found, its log-probability) of one utterance's (T, V)
    per-step log-probabilities."""
    if beam < 1:
        raise UserError(f"the beam must be >= 1, got {beam}")
    # prefix -> (log P(paths ending in a blank), log P(paths ending in its last label))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for step in log_probs:
        step = step.tolist()
        nxt: dict[tuple[int, ...], list[float]] = {}
        add = _adder(nxt)
        for prefix, (p_blank, p_label) in beams.items():
            total = _logsumexp(p_blank, p_label)
            add(prefix, total + step[BLANK], -math.inf)  # a blank: the prefix stays
            last = prefix[-1] if prefix else None
            for v, lp in enumerate(step):
                if v == BLANK:
                    continue
                if v == last:
                    add(prefix, -math.inf, p_label + lp)  # the run of its last label goes on
                    add(prefix + (v,), -math.inf, p_blank + lp)  # after a blank: a new one
                else:
                    add(prefix + (v,), -math.inf, total + lp)
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)
        beams = {prefix: (b, lab) for prefix, (b, lab) in ranked[:beam]}
    prefix, (p_blank, p_label) = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))
    return list(prefix), _logsumexp(p_blank, p_label)


def beam_decode(logits: Tensor, lengths: Tensor, beam: int) -> list[list[int]]:
    """``prefix_beam_search`` of each utterance of (B, T, V) scores."""
    log_probs = logits.float().log_softmax(-1).cpu().numpy()
    return [prefix_beam_search(log_probs[b, :n], beam)[0] for b, n in enumerate(lengths.tolist())]


def needed_steps(labels: list[int]) -> int:
    """The fewest steps a CTC path of ``labels`` has: one each, and a blank between repeats."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:], strict=False))


def check_lengths(steps: Tensor, labellings: list[list[int]], hint: str) -> None:
    """A one-line error if an utterance has fewer output ``steps`` than its labelling needs."""
    for i, (n, labels) in enumerate(zip(steps.tolist(), labellings, strict=True)):
        need = needed_steps(labels)
        if n < need:
            raise UserError(
                f"utterance {i} gives {n} output steps, but its {len(labels)} labels need at "
                f"least {need} (CTC puts a blank between repeats); {hint}"
            )


def as_tensor(labellings: list[list[int]]) -> Tensor:
    """(B, L) labels padded with the blank."""
    width = max((len(x) for x in labellings), default=0)
    out = torch.zeros(len(labellings), max(width, 1), dtype=torch.int64)
    for i, labels in enumerate(labellings):
        out[i, : len(labels)] = torch.tensor(labels, dtype=torch.int64)
    return out
