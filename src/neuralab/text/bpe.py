"""Byte-level BPE, written from scratch (Sennrich et al. 2016; GPT-2's byte-level variant;
the shape of Karpathy's minbpe): train, encode, decode, special tokens, save and load.

Text is split by a regex into chunks (GPT-2's or GPT-4's pattern: words with their leading
space, numbers, punctuation runs, whitespace), each chunk becomes its UTF-8 bytes (ids
0–255), and training repeatedly merges the most frequent adjacent pair of ids, counted
within chunks over the whole text, into a new id (256, 257, ...). Encoding applies the
merges to each chunk in the order they were learnt; decoding joins the ids' bytes, so
``decode(encode(s)) == s`` for any string.

Ties, pairs equally frequent, go to the pair whose tokens came first in GPT-2's
byte-to-character order (a merged token after every byte, in the order it was made): the
rule of Hugging Face ``tokenizers``' ``BpeTrainer``, so that on the same text and the same
pattern the merges equal theirs exactly (tested).

Training counts each distinct chunk once with its frequency and, after a merge, updates
only the chunks that held the merged pair; encoding caches each distinct chunk's ids. A
tokenizer is saved as JSON (never pickled): the pattern, the merges and the special tokens.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import regex

from neuralab.errors import UserError

PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "gpt4": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++"""
        r"""[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
    ),
}
FORMAT = "neuralab-bpe"
CACHE_CHUNKS = 200_000  # distinct chunks whose ids encoding keeps


def _gpt2_byte_order() -> list[int]:
    """Each byte's rank in GPT-2's byte-to-character map sorted by character: printable
    bytes map to themselves, the other 68 to the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: b for b in printable}
    chars |= {b: 256 + k for k, b in enumerate(b for b in range(256) if b not in chars)}
    order = sorted(range(256), key=chars.__getitem__)
    rank = [0] * 256
    for position, byte in enumerate(order):
        rank[byte] = position
    return rank


BYTE_RANK = _gpt2_byte_order()


def _rank(token: int) -> int:
    return BYTE_RANK[token] if token < 256 else token


def _pairs(word: list[int]) -> Counter:
    return Counter(zip(word, word[1:], strict=False))


def _merge(word: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """``word`` with every occurrence of ``pair``, left to right and not overlapping,
    replaced by ``new``."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class BPETokenizer:
    """A byte-level BPE tokenizer: ``merges`` maps each learnt pair to its new id, in the
    order learnt; ``special`` maps special-token strings to ids above every merge's."""

    def __init__(
        self,
        merges: dict[tuple[int, int], int] | None = None,
        pattern: str = "gpt4",
        special: dict[str, int] | None = None,
    ) -> None:
        if pattern not in PATTERNS:
            raise UserError(f"pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
        self.pattern = pattern
        self.split = regex.compile(PATTERNS[pattern])
        self.merges = dict(merges or {})
        self.vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), new in self.merges.items():
            self.vocab[new] = self.vocab[a] + self.vocab[b]
        self.special = dict(special or {})
        self.special_ids = {i: s for s, i in self.special.items()}
        self.special_split = (
            regex.compile("(" + "|".join(regex.escape(s) for s in self.special) + ")")
            if self.special
            else None
        )
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special)

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        pattern: str = "gpt4",
        special: Iterable[str] = (),
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special)`` merges from ``text`` (a string, or an
        iterable of strings split alike); fewer if the text runs out of pairs."""
        special = list(dict.fromkeys(special))
        merges_wanted = vocab_size - 256 - len(special)
        if merges_wanted < 0:
            raise UserError(
                f"vocab size must be at least 256 (the bytes) + {len(special)} special tokens, "
                f"got {vocab_size}"
            )
        tokenizer = cls(pattern=pattern)
        chunks: Counter = Counter()
        for part in [text] if isinstance(text, str) else text:
            chunks.update(tokenizer.split.findall(part))
        words = [list(chunk.encode("utf-8")) for chunk in chunks]
        counts = list(chunks.values())
        pair_count: Counter = Counter()
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (word, count) in enumerate(zip(words, counts, strict=True)):
            for pair, k in _pairs(word).items():
                pair_count[pair] += k * count
                where[pair].add(w)
        heap = [(-c, _rank(a), _rank(b), a, b) for (a, b), c in pair_count.items()]
        heapq.heapify(heap)
        merges: dict[tuple[int, int], int] = {}
        while len(merges) < merges_wanted and heap:
            negative, _, _, a, b = heapq.heappop(heap)
            pair = (a, b)
            actual = pair_count.get(pair, 0)
            if actual <= 0:
                continue
            if actual != -negative:  # stale: its count fell since it was pushed
                heapq.heappush(heap, (-actual, _rank(a), _rank(b), a, b))
                continue
            new = 256 + len(merges)
            merges[pair] = new
            grown: set[tuple[int, int]] = set()
            for w in where.pop(pair):
                word, count = words[w], counts[w]
                merged = _merge(word, pair, new)
                if len(merged) == len(word):
                    continue
                before, after = _pairs(word), _pairs(merged)
                for p, k in before.items():
                    pair_count[p] -= k * count
                for p, k in after.items():
                    pair_count[p] += k * count
                    where[p].add(w)
                    if k > before.get(p, 0):
                        grown.add(p)
                words[w] = merged
            pair_count.pop(pair, None)
            for p in grown:
                heapq.heappush(heap, (-pair_count[p], _rank(p[0]), _rank(p[1]), *p))
        top = 256 + len(merges)
        return cls(merges, pattern, {s: top + k for k, s in enumerate(special)})

    def _encode_chunk(self, data: bytes) -> list[int]:
        """A chunk's ids: its bytes, then the learnt pair of lowest id merged, repeatedly."""
        ids = list(data)
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:], strict=False), key=lambda p: self.merges.get(p, 1 << 62))
            new = self.merges.get(pair)
            if new is None:
                break
            ids = _merge(ids, pair, new)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """The ids of ``text``, special-token strings in it treated as ordinary text."""
        cache, ids = self._cache, []
        for chunk in self.split.findall(text):
            found = cache.get(chunk)
            if found is None:
                found = self._encode_chunk(chunk.encode("utf-8"))
                if len(cache) >= CACHE_CHUNKS:
                    cache.clear()
                cache[chunk] = found
            ids.extend(found)
        return ids

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``, each special token in it as its own id."""
        if self.special_split is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        for k, part in enumerate(self.special_split.split(text)):
            if k % 2:
                ids.append(self.special[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        parts = []
        for i in ids:
            if i in self.vocab:
                parts.append(self.vocab[i])
            elif i in self.special_ids:
                parts.append(self.special_ids[i].encode("utf-8"))
            else:
                raise UserError(f"token id {i} is not in this tokenizer (0..{self.vocab_size - 1})")
        return b"".join(parts)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 (a multi-byte character cut by
        a slice of ids) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer as JSON (through a temporary file, then renamed)."""
        path = Path(path)
        body = {
            "format": FORMAT,
            "version": 1,
            "pattern": self.pattern,
            "merges": [[a, b] for a, b in self.merges],
            "special": self.special,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a tokenizer saved by ``save``; anything else is a one-line error."""
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"no such tokenizer file: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{path} is not a neuralab BPE tokenizer ({err})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise UserError(f"{path} is not a neuralab BPE tokenizer (no format: {FORMAT})")
        merges: dict[tuple[int, int], int] = {}
        for k, pair in enumerate(body.get("merges", [])):
            new = 256 + k
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and all(isinstance(i, int) and 0 <= i < new for i in pair)
            ):
                raise UserError(f"{path}: merge {k} must be two ids below {new}, got {pair!r}")
            merges[(pair[0], pair[1])] = new
        special = body.get("special", {})
        top = 256 + len(merges)
        if not isinstance(special, dict) or sorted(special.values()) != list(
            range(top, top + len(special))
        ):
            raise UserError(f"{path}: special tokens must have the ids {top} on, in order")
        return cls(merges, body.get("pattern", "gpt4"), special)
