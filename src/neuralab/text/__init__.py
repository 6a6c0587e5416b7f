"""Tokenizers: byte-level BPE (``bpe``)."""

from neuralab.text.bpe import BPETokenizer

__all__ = ["BPETokenizer"]
