"""The Bible as real text: verse-aligned translations and verses labelled by genre, read from
the SWORD modules that Debian packages (``apt-get install sword-text-web sword-text-sparv
sword-text-kjv``), all three public domain:

- ``web``: the World English Bible (engWEB2015eb, NRSVA versification),
- ``rv1909``: the Reina-Valera 1909, in Spanish (spaRV1909eb, KJV versification),
- ``kjv``: the King James Version (engKJV2006eb, KJV versification).

The modules are found in ``<dir>/sword`` for the directory the user names (``--data-dir``
or ``NEURALAB_DATA``), then the user cache, then Debian's ``/usr/share/sword``. Each is read
once with ``pysword`` (each compressed block decompressed once: pysword alone decompresses
a whole book per verse), its OSIS markup stripped (footnotes and psalm titles dropped, the
words kept), and the verses cached as JSON under a hash of the module's files.

Only the 66 books of the Protestant canon are used. Genres (8 classes) are whole books:
law (Genesis–Deuteronomy), history (Joshua–Esther, Acts), wisdom (Job–Song of Songs), major
prophets (Isaiah–Daniel), minor prophets (Hosea–Malachi), gospels, epistles (Romans–Jude)
and apocalyptic (Revelation). ``bible-genre`` labels each WEB verse by its book's genre;
its test split is every 10th chapter (10, 20, ...), its val split the chapters 5, 15, ...,
and train the rest.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections import Counter
from pathlib import Path

import regex

from neuralab.errors import UserError

MODULES = {"web": "engWEB2015eb", "rv1909": "spaRV1909eb", "kjv": "engKJV2006eb"}
PACKAGES = {"web": "sword-text-web", "rv1909": "sword-text-sparv", "kjv": "sword-text-kjv"}
SYSTEM_SWORD = Path("/usr/share/sword")  # module-level so tests can point it elsewhere
READER_VERSION = 1  # bump when the same module would give other verses

GENRES = {
    "law": "Gen Exod Lev Num Deut",
    "history": "Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth Acts",
    "wisdom": "Job Ps Prov Eccl Song",
    "major prophets": "Isa Jer Lam Ezek Dan",
    "minor prophets": "Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal",
    "gospels": "Matt Mark Luke John",
    "epistles": "Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm Heb Jas "
    "1Pet 2Pet 1John 2John 3John Jude",
    "apocalyptic": "Rev",
}
GENRE_OF = {book: genre for genre, books in GENRES.items() for book in books.split()}
BOOKS = tuple(
    "Gen Exod Lev Num Deut Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth Job Ps "
    "Prov Eccl Song Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech "
    "Mal Matt Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim "
    "Titus Phlm Heb Jas 1Pet 2Pet 1John 2John 3John Jude Rev".split()
)  # the Protestant canon, in order (OSIS names)

_DROPPED = regex.compile(r"<(note|title)\b[^>]*>.*?</\1>", regex.S)  # footnotes, titles
_TAG = regex.compile(r"<[^>]*>")
_SPACE_BEFORE = regex.compile(r"\s+([,.;:!?’”)\]»])")
_SPACES = regex.compile(r"\s+")


def clean_osis(markup: str) -> str:
    """A verse's words from its OSIS markup: footnotes and titles dropped (leaving a space
    where they stood), every other tag removed, entities decoded, spaces made single and
    none left before closing punctuation."""
    text = _TAG.sub(" ", _DROPPED.sub(" ", markup)).replace("¶", " ")
    text = _SPACE_BEFORE.sub(r"\1", _SPACES.sub(" ", html.unescape(text)))
    return text.strip()


def sword_roots(data_dir: str | Path | None = None) -> list[Path]:
    """Where SWORD modules are looked for, in order."""
    from neuralab.data.store import package_dirs

    return package_dirs("sword", SYSTEM_SWORD, data_dir)


def find_module(translation: str, data_dir: str | Path | None = None) -> Path:
    """The SWORD library directory that holds ``translation``'s module."""
    if translation not in MODULES:
        raise UserError(f"translation must be one of {', '.join(MODULES)}, got {translation!r}")
    module = MODULES[translation]
    roots = sword_roots(data_dir)
    for root in roots:
        if (root / "mods.d" / f"{module.lower()}.conf").is_file() or (
            root / "mods.d" / f"{module}.conf"
        ).is_file():
            return root
    raise UserError(
        f"the Bible module {module} ({translation}) was not found in "
        f"{', '.join(str(r) for r in roots)}; to get it: apt-get install "
        f"{PACKAGES[translation]}, or copy a SWORD library (mods.d/ and modules/) to DIR/sword "
        f"and pass --data-dir DIR (or set NEURALAB_DATA=DIR)"
    )


def _fingerprint(root: Path, module: str) -> str:
    """A hash of the module's files (names, sizes, times) and of this reader's version."""
    h = hashlib.sha256(f"{READER_VERSION}:{module}".encode())
    files = sorted(p for p in root.rglob("*") if p.is_file() and module.lower() in str(p).lower())
    for p in files:
        stat = p.stat()
        h.update(f"{p.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _read_module(root: Path, module: str) -> dict[str, str]:
    """Every verse of the canon's books in ``module``, as {"Gen 1:1": text}; empty verses
    are left out."""
    from pysword.modules import SwordModules

    library = SwordModules(str(root))
    try:
        library.parse_modules()
        bible = library.get_bible_from_module(module)
    except Exception as err:  # pysword raises bare exceptions on broken libraries
        raise UserError(f"cannot read the SWORD module {module} in {root}: {err}") from None
    blocks: dict[tuple[int, int], bytes] = {}
    decompress = bible._decompressed_text  # pysword's own, once per block rather than verse

    def once(testament: object, block: int) -> bytes:
        key = (id(testament), block)
        if key not in blocks:
            blocks[key] = decompress(testament, block)
        return blocks[key]

    bible._decompressed_text = once
    verses = {}
    books = bible.get_structure().get_books()
    for testament in ("ot", "nt"):
        for book in books.get(testament, []):
            if book.osis_name not in GENRE_OF:
                continue
            for chapter, length in enumerate(book.chapter_lengths, start=1):
                for verse in range(1, length + 1):
                    markup = bible.get(
                        books=[book.osis_name], chapters=[chapter], verses=[verse], clean=False
                    )
                    text = clean_osis(markup)
                    if text:
                        verses[f"{book.osis_name} {chapter}:{verse}"] = text
    return verses


def read_verses(translation: str, data_dir: str | Path | None = None) -> dict[str, str]:
    """{"Gen 1:1": text} of a translation's canon, read once and cached."""
    from neuralab.data.store import cache_root

    root = find_module(translation, data_dir)
    module = MODULES[translation]
    cache = cache_root() / "bible" / f"{translation}-{_fingerprint(root, module)}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    verses = _read_module(root, module)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps(verses, ensure_ascii=False), encoding="utf-8")
    tmp.replace(cache)
    return verses


def parse_ref(ref: str) -> tuple[str, int, int]:
    """("Gen", 1, 1) of "Gen 1:1"."""
    book, place = ref.split(" ")
    chapter, verse = place.split(":")
    return book, int(chapter), int(verse)


GENRE_TRANSLATIONS = ("web", "kjv")  # the English ones, which may train bible-genre


def genre_split(
    split: str, data_dir: str | Path | None = None, translations: tuple[str, ...] = ("web",)
) -> tuple[list[str], list[int]]:
    """(texts, genre ids) of ``split`` of ``bible-genre``: test from chapters 10, 20, ...,
    val from chapters 5, 15, ..., train from the rest; in canon order. Val and test are WEB
    verses; train holds the train chapters' verses of each of ``translations`` in turn.

    A KJV chapter trains only where it holds as many verses as the WEB's chapter of that
    number, so that a verse numbered into another chapter (and so maybe another split) never
    trains. Of the KJV's 1,189 chapters, 5 are left out: verses that the WEB leaves out of
    the text (Acts 8:37, Luke 17:36, ...)."""
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be train, val or test, got {split!r}")
    unknown = [t for t in translations if t not in GENRE_TRANSLATIONS]
    if not translations or unknown or len(set(translations)) < len(translations):
        raise UserError(
            f"data.translations must name each of {', '.join(GENRE_TRANSLATIONS)} at most once "
            f"(at least one), got {','.join(translations) or 'none'}"
        )
    genres = list(GENRES)
    web = read_verses("web", data_dir)
    web_sizes = _chapter_sizes(web)
    texts, labels = [], []
    for translation in translations if split == "train" else ("web",):
        verses = web if translation == "web" else read_verses(translation, data_dir)
        sizes = web_sizes if translation == "web" else _chapter_sizes(verses)
        for ref, text in verses.items():
            book, chapter, _ = parse_ref(ref)
            where = "test" if chapter % 10 == 0 else "val" if chapter % 10 == 5 else "train"
            if where == split and sizes[book, chapter] == web_sizes[book, chapter]:
                texts.append(text)
                labels.append(genres.index(GENRE_OF[book]))
    return texts, labels


def _chapter_sizes(verses: dict[str, str]) -> Counter[tuple[str, int]]:
    """How many verses each (book, chapter) of ``verses`` holds."""
    return Counter(parse_ref(ref)[:2] for ref in verses)


# --------------------------------------------------------------------------- translation

PAIRS = {"bible-en-es": ("web", "rv1909"), "bible-kjv-web": ("kjv", "web")}
# whole books, so that no passage told twice (Kings and Chronicles, the Gospels) is on both
# sides of a split; each split spans the Old and New Testaments and several genres
TEST_BOOKS = ("Judg", "Prov", "Rom", "Heb")
VAL_BOOKS = ("Ruth", "Eccl", "Jonah", "Gal", "Jas")
RATIO = (0.5, 2.0)  # the character-length ratios (target / source) of an aligned pair
OUTLIERS_PER_CHAPTER = 3  # a chapter with this many pairs outside RATIO is shifted


def _ratio_ok(source: str, target: str) -> bool:
    return RATIO[0] <= len(target) / max(len(source), 1) <= RATIO[1]


def aligned_pairs(
    source: str, target: str, data_dir: str | Path | None = None
) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """The verses both translations have, as (ref, source text, target text), less those that
    are not translations of each other, and how many each rule dropped. Versifications differ
    in places (NRSVA and KJV number Hosea 11-12 or Numbers 12-13 differently, and an offset
    runs on into the next chapter), so:

    1. a chapter whose verse count differs between the two, and the chapter after it, are
       dropped (``versification``);
    2. a chapter with ``OUTLIERS_PER_CHAPTER`` or more pairs whose character-length ratio
       lies outside ``RATIO`` is dropped (``shifted``: an offset with equal counts);
    3. any other pair outside ``RATIO`` is dropped (``ratio``)."""
    a, b = read_verses(source, data_dir), read_verses(target, data_dir)
    sizes_a, sizes_b = _chapter_sizes(a), _chapter_sizes(b)
    uneven = {k for k in sizes_a.keys() | sizes_b.keys() if sizes_a[k] != sizes_b[k]}
    uneven |= {(book, chapter + 1) for book, chapter in uneven}
    common = [ref for ref in a if ref in b]
    outliers: dict[tuple[str, int], int] = {}
    for ref in common:
        if not _ratio_ok(a[ref], b[ref]):
            key = parse_ref(ref)[:2]
            outliers[key] = outliers.get(key, 0) + 1
    shifted = {k for k, n in outliers.items() if n >= OUTLIERS_PER_CHAPTER} - uneven
    dropped = {"versification": 0, "shifted": 0, "ratio": 0}
    pairs = []
    for ref in common:
        chapter = parse_ref(ref)[:2]
        if chapter in uneven:
            dropped["versification"] += 1
        elif chapter in shifted:
            dropped["shifted"] += 1
        elif not _ratio_ok(a[ref], b[ref]):
            dropped["ratio"] += 1
        else:
            pairs.append((ref, a[ref], b[ref]))
    return pairs, dropped


def split_of_book(book: str) -> str:
    """The split a book's verses belong to in the translation sets."""
    return "test" if book in TEST_BOOKS else "val" if book in VAL_BOOKS else "train"


def check_books(books: tuple[str, ...]) -> None:
    """Refuse unknown book names, and a choice of books that leaves a split empty."""
    unknown = [b for b in books if b not in GENRE_OF]
    if unknown:
        raise UserError(f"unknown books {', '.join(unknown)}; the books are: {' '.join(BOOKS)}")
    have = {split_of_book(b) for b in books}
    for split, wanted in (("test", TEST_BOOKS), ("val", VAL_BOOKS)):
        if books and split not in have:
            raise UserError(
                f"data.books leaves no {split} pairs: include one of {', '.join(wanted)}"
            )
    if books and "train" not in have:
        raise UserError(
            "data.books leaves no train pairs: include a book outside the val and test books"
        )


def translation_split(
    name: str, split: str, data_dir: str | Path | None = None, books: tuple[str, ...] = ()
) -> list[tuple[str, str, str]]:
    """(ref, source, target) of ``split`` of the parallel set ``name`` (``PAIRS``), in canon
    order; ``books`` (OSIS names) keeps those books only."""
    if name not in PAIRS:
        raise UserError(f"parallel texts are {', '.join(PAIRS)}, not {name!r}")
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be train, val or test, got {split!r}")
    check_books(books)
    pairs, _ = aligned_pairs(*PAIRS[name], data_dir)
    return [
        p
        for p in pairs
        if split_of_book(book := parse_ref(p[0])[0]) == split and (not books or book in books)
    ]
