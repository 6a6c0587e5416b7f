"""Sampling text from a trained language model: ``neuralab sample`` and ``neuralab.sample``.

The run's tokenizer (``vocab.json`` or ``tokenizer.json``) and checkpoint are all it needs:
no data is read.
A seed makes the sample reproducible: the same run, prompt, settings and seed give the
same text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from neuralab.data.text import load_run_tokenizer
from neuralab.errors import UserError
from neuralab.train.evaluate import load_model


def sample_stream(
    run_dir: str | Path,
    prompt: str = "\n",
    tokens: int = 500,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    which: str = "best",
) -> Iterator[str]:
    """The text that follows ``prompt``, yielded token by token as the model samples it.

    Bad input (no such run, a prompt outside the vocabulary) fails here, before the first
    character, so a caller never prints half an answer before an error."""
    run_dir = Path(run_dir)
    tokenizer = load_run_tokenizer(run_dir)
    model = load_model(run_dir, which)
    if getattr(model, "kind", None) != "text":
        raise UserError(f"{run_dir} holds an image model; sampling needs a language model")
    if tokens < 0:
        raise UserError(f"--tokens must be >= 0, got {tokens}")
    if not prompt:
        raise UserError("the prompt is empty; give at least one character (e.g. a newline)")
    idx = tokenizer.encode(prompt)[None, :]  # (1, T)
    generator = torch.Generator().manual_seed(seed)
    stream = model.generate_stream(idx, tokens, temperature, top_k, generator)
    return tokenizer.decode_stream(stream)


def sample(
    run_dir: str | Path,
    prompt: str = "\n",
    tokens: int = 500,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    which: str = "best",
) -> str:
    """The ``tokens`` tokens (characters for a character-level run) a trained language model
    writes after ``prompt``."""
    stream = sample_stream(
        run_dir, prompt, tokens, temperature=temperature, top_k=top_k, seed=seed, which=which
    )
    return "".join(stream)
