"""Decoding a captioner or a translator: greedy, beam search and temperature sampling,
batched.

A decoder is a model with ``encode(x)`` -> memory, ``start(memory)`` -> state and
``step(memory, state, words)`` -> (logits, state, attention weights), where memory and
state are tuples of tensors whose first dimension is the batch, and with the ids ``bos``
(the first input) and ``eos`` (the end). Each search returns, per input (an image, a
source sentence), the word ids before ``<eos>`` and the (words, P) attention weights that
chose them ((words, 0) for a model that does not attend).

Beam search keeps the ``beam`` likeliest partial outputs of every input; one that ends
(``<eos>``) leaves the beam with its score normalised by length, ``log p / len^α`` (Wu et
al. 2016's simpler form; α = 0 is the raw log-probability), and an input stops when
``beam`` outputs have ended — so beam 1 is greedy decoding. Outputs still open at
``max_len`` end there.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from neuralab.models.base import check


class Decoder(Protocol):
    bos: int
    eos: int

    def encode(self, x: Tensor) -> tuple[Tensor, ...]: ...

    def start(self, memory: tuple[Tensor, ...]) -> tuple[Tensor, ...]: ...

    def step(
        self, memory: tuple[Tensor, ...], state: tuple[Tensor, ...], words: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...], Tensor]: ...


def teacher_inputs(targets: Tensor, bos: int) -> Tensor:
    """The decoder's inputs for (B, T) targets: ``<bos>`` and every target but the last."""
    return torch.cat([torch.full_like(targets[:, :1], bos), targets[:, :-1]], 1)


def step_through(
    model: Decoder, memory: tuple[Tensor, ...], words: Tensor
) -> tuple[Tensor, Tensor]:
    """Teacher forcing by stepping from the encoded input: (B, T) input words (``<bos>``
    first) read one at a time -> (B, T, V) logits of the words after each and (B, T, P)
    attention weights."""
    state = model.start(memory)
    logits, weights = [], []
    for t in range(words.shape[1]):
        step_logits, state, alpha = model.step(memory, state, words[:, t])
        logits.append(step_logits)
        weights.append(alpha)
    return torch.stack(logits, 1), torch.stack(weights, 1)


def _begin(model: Decoder, x: Tensor, copies: int = 1):
    memory = model.encode(x)
    if copies > 1:
        memory = tuple(m.repeat_interleave(copies, 0) for m in memory)
    state = model.start(memory)
    words = torch.full((len(x) * copies,), model.bos, dtype=torch.long, device=x.device)
    return memory, state, words


def _cut(ids: Tensor, alphas: Tensor, eos: int) -> list[tuple[list[int], Tensor]]:
    """Each row's ids before its first <eos>, and their attention weights."""
    out = []
    for row, alpha in zip(ids.tolist(), alphas, strict=True):
        n = row.index(eos) if eos in row else len(row)
        out.append((row[:n], alpha[:n]))
    return out


@torch.no_grad()
def greedy(model: Decoder, x: Tensor, max_len: int) -> list[tuple[list[int], Tensor]]:
    """The likeliest word at every step."""
    return sample(model, x, max_len, temperature=0.0)


@torch.no_grad()
def sample(
    model: Decoder,
    x: Tensor,
    max_len: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[tuple[list[int], Tensor]]:
    """Words drawn from softmax(logits / temperature); temperature 0 is greedy."""
    check(temperature >= 0, f"temperature must be >= 0, got {temperature}")
    memory, state, words = _begin(model, x)
    ids, alphas = [], []
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(max_len):
        logits, state, alpha = model.step(memory, state, words)
        if temperature == 0:
            words = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float() / temperature, -1)
            words = torch.multinomial(probs, 1, generator=generator)[:, 0]
        ids.append(words)
        alphas.append(alpha)
        done |= words == model.eos
        if done.all():
            break
    return _cut(torch.stack(ids, 1), torch.stack(alphas, 1).float().cpu(), model.eos)


@torch.no_grad()
def beam_search(
    model: Decoder, x: Tensor, max_len: int, beam: int = 3, alpha: float = 0.7
) -> list[tuple[list[int], Tensor]]:
    """The best of each input's ``beam`` ended outputs by length-normalised log-probability
    (``alpha``: the exponent of the length)."""
    check(beam >= 1, f"beam must be >= 1, got {beam}")
    n = len(x)
    memory, state, words = _begin(model, x, beam)
    scores = torch.full((n, beam), float("-inf"), device=x.device)
    scores[:, 0] = 0.0  # one live output per input at first
    history = torch.zeros(n * beam, 0, dtype=torch.long, device=x.device)
    attention = None
    ended: list[list[tuple[float, list[int], Tensor]]] = [[] for _ in range(n)]
    for t in range(max_len):
        logits, state, weights = model.step(memory, state, words)
        attention = (
            weights[:, None] if attention is None else torch.cat([attention, weights[:, None]], 1)
        )  # (N·beam, t + 1, P)
        logp = torch.log_softmax(logits.float(), -1).view(n, beam, -1)
        total = (scores[..., None] + logp).view(n, -1)  # (N, beam·V)
        top_scores, top = total.topk(min(2 * beam, total.shape[1]), dim=1)
        origin = torch.zeros(n, beam, dtype=torch.long)
        chosen = torch.full((n, beam), model.eos, dtype=torch.long)
        new_scores = torch.full((n, beam), float("-inf"))
        vocab = logp.shape[-1]
        for i in range(n):
            if len(ended[i]) >= beam:
                continue  # this input is done; its rows run on, unused
            kept = 0
            for score, flat in zip(top_scores[i].tolist(), top[i].tolist(), strict=True):
                if score == float("-inf"):
                    break
                b, word = divmod(flat, vocab)
                row = i * beam + b
                if word == model.eos or t == max_len - 1:
                    ids = history[row].tolist() + ([] if word == model.eos else [word])
                    normalised = score / (t + 1) ** alpha  # t + 1 words, <eos> included
                    ended[i].append((normalised, ids, attention[row, : len(ids)].float().cpu()))
                    if len(ended[i]) >= beam:
                        break
                elif kept < beam:
                    origin[i, kept], chosen[i, kept], new_scores[i, kept] = b, word, score
                    kept += 1
                if kept == beam:
                    break
        if all(len(e) >= beam for e in ended):
            break
        rows = (torch.arange(n)[:, None] * beam + origin).flatten().to(x.device)
        state = tuple(s[rows] for s in state)
        history = torch.cat([history[rows], chosen.flatten()[:, None].to(x.device)], 1)
        attention = attention[rows]
        words = chosen.flatten().to(x.device)
        scores = new_scores.to(x.device)
    return [max(e, key=lambda item: item[0])[1:] for e in ended]


def decode(
    model: Decoder,
    x: Tensor,
    max_len: int,
    beam: int = 1,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[tuple[list[int], Tensor]]:
    """Sampled at ``temperature`` if it is above 0, else by beam search (beam 1: greedy)."""
    if temperature > 0:
        return sample(model, x, max_len, temperature, generator)
    if beam == 1:
        return greedy(model, x, max_len)
    return beam_search(model, x, max_len, beam)
