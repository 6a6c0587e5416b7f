"""Debian's fortune cookies as labelled text (``apt-get install fortunes fortunes-min``): the
32 categories with at least 100 fortunes (14,7xx texts), each text labelled by its file.

The files are found in ``<dir>/fortunes`` for the directory the user names (``--data-dir``
or ``NEURALAB_DATA``), then the user cache, then Debian's ``/usr/share/games/fortunes``.
Fortunes are separated by lines holding only ``%``; empty ones are dropped, and a file's
bytes that are not UTF-8 are read as Latin-1. The test split is every 10th fortune of each
category (its 1st, 11th, ...), the validation split the 6th, 16th, ..., and train the rest.
"""

from __future__ import annotations

from pathlib import Path

from neuralab.errors import UserError

SYSTEM_FORTUNES = Path("/usr/share/games/fortunes")  # module-level so tests can point it
CATEGORIES = (
    "art", "computers", "cookie", "definitions", "disclaimer", "drugs", "education", "ethnic",
    "food", "fortunes", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie",
    "literature", "love", "men-women", "miscellaneous", "people", "perl", "platitudes",
    "politics", "riddles", "science", "songs-poems", "sports", "startrek", "wisdom", "work",
    "zippy",
)  # fmt: skip


def find_fortunes(data_dir: str | Path | None = None) -> Path:
    """The first directory holding every category's file."""
    from neuralab.data.store import package_dirs

    places = package_dirs("fortunes", SYSTEM_FORTUNES, data_dir)
    for place in places:
        if all((place / c).is_file() for c in CATEGORIES):
            return place
    raise UserError(
        f"the fortunes were not found in {', '.join(str(p) for p in places)}; to get them: "
        "apt-get install fortunes fortunes-min, or copy their files to DIR/fortunes and pass "
        "--data-dir DIR (or set NEURALAB_DATA=DIR)"
    )


def read_category(path: Path) -> list[str]:
    """The fortunes of one file, in order, without empty ones."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    parts, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            parts.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current).strip())
    return [p for p in parts if p]


def fortune_split(split: str, data_dir: str | Path | None = None) -> tuple[list[str], list[int]]:
    """(texts, category ids) of ``split``: test every 10th fortune of a category from its
    first, val every 10th from its 6th, train the rest."""
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be train, val or test, got {split!r}")
    root = find_fortunes(data_dir)
    texts, labels = [], []
    for label, category in enumerate(CATEGORIES):
        for i, text in enumerate(read_category(root / category)):
            where = "test" if i % 10 == 0 else "val" if i % 10 == 5 else "train"
            if where == split:
                texts.append(text)
                labels.append(label)
    return texts, labels
