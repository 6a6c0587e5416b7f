"""The caption grammar of ``fashion-scenes-captions``: a scene's facts become sentences, and
sentences become facts again, so that every generated caption can be checked against the
picture.

A scene holds 1–3 things, each a Fashion-MNIST class in a named colour and of a size (small,
medium or large: bands of item sides with gaps between them, so the word is a fact of the
picture). A caption mentions every thing once, by a noun phrase ``a [size] colour noun``
(no size word for a medium thing; identical things counted: "two red bags"), either as a
list ("a red bag , a small blue boot and a white shirt") or with one spatial relation
between two of them ("a red bag to the left of a small blue boot and a white shirt"), after
an optional opening ("a picture of"). Nouns, size words, relations and openings have
paraphrases, and order varies, so that BLEU rewards content rather than one template.

``parse`` reads a caption back into mentions and relations; ``score`` counts its facts —
each class's count, each thing's colour and size, each stated relation — against the
scene's truth: precision over every fact it states (a clause it cannot parse counts as one
false fact), recall over the scene's count, colour and size facts (relations are a choice
of the speaker, so they count for precision only).
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import numpy as np

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan")
PALETTE = (
    (225, 35, 35),
    (40, 190, 60),
    (50, 90, 245),
    (240, 215, 30),
    (160, 60, 215),
    (250, 135, 20),
    (245, 245, 245),
    (40, 215, 225),
)
NOUNS = (  # per Fashion-MNIST class: (singular, plural) paraphrases
    (("t-shirt", "t-shirts"), ("top", "tops")),
    (("pair of trousers", "pairs of trousers"), ("pair of pants", "pairs of pants")),
    (("pullover", "pullovers"), ("sweater", "sweaters")),
    (("dress", "dresses"),),
    (("coat", "coats"), ("jacket", "jackets")),
    (("sandal", "sandals"),),
    (("shirt", "shirts"),),
    (("sneaker", "sneakers"), ("trainer", "trainers")),
    (("bag", "bags"), ("handbag", "handbags")),
    (("ankle boot", "ankle boots"), ("boot", "boots")),
)
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
RELATIONS = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
OPENINGS = ("a picture of", "an image of", "a photo of", "this scene shows", "here we see")
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
COUNT_WORDS = {2: "two", 3: "three"}
SEPARATORS = ("and", ",")
LENIENCY = 0.5  # a relation holds if its axis's offset is at least this times the other's


class Thing(NamedTuple):
    """One object of a scene, as captions see it."""

    cls: int
    colour: int  # index into COLOURS
    size: str  # "small", "medium" or "large"
    box: tuple[float, float, float, float]  # x0, y0, x1, y1


class Mention(NamedTuple):
    """A noun phrase of a caption: ``count`` things of a class, colour and size if said."""

    cls: int
    colour: int | None
    size: str | None
    count: int


class Parsed(NamedTuple):
    mentions: list[Mention]
    relations: list[tuple[Mention, str, Mention]]
    errors: int  # clauses that could not be read


# ----------------------------------------------------------------------------- geometry


def _centre(thing: Thing) -> tuple[float, float]:
    x0, y0, x1, y1 = thing.box
    return (x0 + x1) / 2, (y0 + y1) / 2


def relation(a: Thing, b: Thing) -> str:
    """Where ``a`` lies from ``b`` along the axis their centres differ most on."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    dx, dy = bx - ax, by - ay
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "above" if dy > 0 else "below"


def holds(rel: str, a: Thing, b: Thing) -> bool:
    """Whether "a REL b" is true: ``a`` lies on that side of ``b``, by at least
    ``LENIENCY`` times the offset along the other axis (a diagonal pair admits both words)."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    along, across = {
        "left": (bx - ax, by - ay),
        "right": (ax - bx, by - ay),
        "above": (by - ay, bx - ax),
        "below": (ay - by, bx - ax),
    }[rel]
    return along > 0 and along >= LENIENCY * abs(across)


# ----------------------------------------------------------------------------- facts -> words


def _noun_phrase(cls: int, colour: int, size: str, count: int, rng: np.random.Generator) -> str:
    words = []
    if size != "medium":
        options = SIZE_WORDS[size]
        words.append(options[int(rng.integers(len(options)))])
    words.append(COLOURS[colour])
    nouns = NOUNS[cls][int(rng.integers(len(NOUNS[cls])))]
    words.append(nouns[0] if count == 1 else nouns[1])
    if count > 1:
        det = COUNT_WORDS[count]
    elif rng.random() < 0.2:
        det = "one"
    else:
        det = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([det, *words])


def _listed(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return " , ".join(phrases[:-1]) + " and " + phrases[-1]


def describe(things: list[Thing], rng: np.random.Generator) -> str:
    """One caption of a scene's ``things``, its wording drawn from ``rng``."""
    order = [things[i] for i in rng.permutation(len(things))]
    if len(order) >= 2 and rng.random() < 0.5:
        a, b, *rest = order
        rel_words = RELATIONS[relation(a, b)]
        parts = [
            _noun_phrase(a.cls, a.colour, a.size, 1, rng),
            rel_words[int(rng.integers(len(rel_words)))],
            _noun_phrase(b.cls, b.colour, b.size, 1, rng),
        ]
        body = " ".join(parts)
        if rest:
            c = rest[0]
            body += " and " + _noun_phrase(c.cls, c.colour, c.size, 1, rng)
    else:
        groups: dict[tuple[int, int, str], int] = {}
        for t in order:
            groups[(t.cls, t.colour, t.size)] = groups.get((t.cls, t.colour, t.size), 0) + 1
        body = _listed([_noun_phrase(*key, n, rng) for key, n in groups.items()])
    if rng.random() < 0.5:
        body = OPENINGS[int(rng.integers(len(OPENINGS)))] + " " + body
    return body


# ----------------------------------------------------------------------------- words -> facts


def _phrases(table: dict[str, tuple[str, ...]]) -> list[tuple[list[str], str]]:
    """(words, meaning) of every phrase, longest first, for greedy matching."""
    found = [(p.split(), meaning) for meaning, options in table.items() for p in options]
    return sorted(found, key=lambda item: -len(item[0]))


_NOUN_PHRASES = _phrases(
    {
        (c, plural): tuple(n[plural] for n in NOUNS[c])
        for c in range(len(NOUNS))
        for plural in (0, 1)
    }
)
_SIZE_PHRASES = _phrases(SIZE_WORDS)
_RELATION_PHRASES = _phrases(RELATIONS)
_OPENING_PHRASES = [o.split() for o in sorted(OPENINGS, key=lambda o: -len(o.split()))]


def _match(tokens: list[str], at: int, phrases):
    for words, meaning in phrases:
        if tokens[at : at + len(words)] == words:
            return meaning, at + len(words)
    return None, at


def _mention(tokens: list[str], at: int) -> tuple[Mention | None, int]:
    if at >= len(tokens) or tokens[at] not in NUMBERS:
        return None, at
    count, at = NUMBERS[tokens[at]], at + 1
    size, at = _match(tokens, at, _SIZE_PHRASES)
    colour = None
    if at < len(tokens) and tokens[at] in COLOURS:
        colour, at = COLOURS.index(tokens[at]), at + 1
    noun, at = _match(tokens, at, _NOUN_PHRASES)
    if noun is None:
        return None, at
    return Mention(noun[0], colour, size, count), at


def _clause(tokens: list[str]):
    """A mention, or a (mention, relation, mention) triple, filling ``tokens``; else None."""
    first, at = _mention(tokens, 0)
    if first is None:
        return None
    if at == len(tokens):
        return first
    rel, at = _match(tokens, at, _RELATION_PHRASES)
    second, at = _mention(tokens, at) if rel is not None else (None, at)
    if second is None or at != len(tokens):
        return None
    return first, rel, second


def parse(caption: str) -> Parsed:
    """The mentions and relations of a caption, and how many of its clauses were unreadable."""
    tokens = caption.split()
    for opening in _OPENING_PHRASES:
        if tokens[: len(opening)] == opening:
            tokens = tokens[len(opening) :]
            break
    clauses, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            clauses.append(current)
            current = []
        else:
            current.append(token)
    clauses.append(current)
    mentions, relations, errors = [], [], 0
    for words in clauses:
        if not words:
            errors += bool(tokens)  # an empty caption states nothing; "a bag and" errs
            continue
        found = _clause(words)
        if found is None:
            errors += 1
        elif isinstance(found, Mention):
            mentions.append(found)
        else:
            mentions += [found[0], found[2]]
            relations.append(found)
    return Parsed(mentions, relations, errors)


def stated_facts(parsed: Parsed) -> set[tuple]:
    """The facts a parsed caption states: each class's count, each mention's colour and size,
    each relation between (class, colour, size) descriptions."""
    counts: Counter = Counter()
    facts: set[tuple] = set()
    for m in parsed.mentions:
        counts[m.cls] += m.count
        if m.colour is not None:
            facts.add(("colour", m.cls, m.colour))
        if m.size is not None:
            facts.add(("size", m.cls, m.size))
    facts |= {("count", c, n) for c, n in counts.items()}
    for a, rel, b in parsed.relations:
        facts.add(("relation", (a.cls, a.colour, a.size), rel, (b.cls, b.colour, b.size)))
    return facts


def true_facts(things: list[Thing]) -> set[tuple]:
    """The count, colour and size facts of a scene that a complete caption states."""
    facts = {("colour", t.cls, t.colour) for t in things}
    facts |= {("size", t.cls, t.size) for t in things if t.size != "medium"}
    return facts | {("count", c, n) for c, n in Counter(t.cls for t in things).items()}


def _fits(description: tuple, thing: Thing) -> bool:
    cls, colour, size = description
    return thing.cls == cls and colour in (None, thing.colour) and size in (None, thing.size)


def _is_true(fact: tuple, things: list[Thing], truth: set[tuple]) -> bool:
    if fact[0] != "relation":
        return fact in truth
    _, a, rel, b = fact
    return any(
        holds(rel, x, y)
        for i, x in enumerate(things)
        for j, y in enumerate(things)
        if i != j and _fits(a, x) and _fits(b, y)
    )


class FactScore(NamedTuple):
    """Counts of one caption's (or a corpus's) facts: ``correct`` of ``stated`` are true,
    ``recalled`` of the scene's ``truth`` facts are stated."""

    correct: int
    stated: int
    recalled: int
    truth: int


def score(caption: str, things: list[Thing]) -> FactScore:
    """The facts of ``caption`` against the scene's ``things``."""
    parsed = parse(caption)
    facts, truth = stated_facts(parsed), true_facts(things)
    correct = sum(_is_true(f, things, truth) for f in facts)
    return FactScore(correct, len(facts) + parsed.errors, len(facts & truth), len(truth))


def fact_scores(captions: list[str], scenes: list[list[Thing]]) -> dict[str, float]:
    """Corpus-level fact precision, recall and F1 of ``captions`` of ``scenes``."""
    scores = [score(c, t) for c, t in zip(captions, scenes, strict=True)]
    correct, stated, recalled, truth = (sum(s[i] for s in scores) for i in range(4))
    precision = correct / stated if stated else 0.0
    recall = recalled / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"fact_precision": precision, "fact_recall": recall, "fact_f1": f1}


FACT_KINDS = ("count", "colour", "size", "relation")


def fact_breakdown(captions: list[str], scenes: list[list[Thing]]) -> dict[str, dict]:
    """Where the facts go wrong: per kind of fact, how many were stated and how many of those
    are true, and (but for relations, which no caption owes) how many of the scenes' facts
    were stated; ``unreadable`` counts the clauses the parser could not read."""
    out = {k: {"stated": 0, "correct": 0, "truth": 0, "recalled": 0} for k in FACT_KINDS}
    unreadable = 0
    for caption, things in zip(captions, scenes, strict=True):
        parsed = parse(caption)
        facts, truth = stated_facts(parsed), true_facts(things)
        unreadable += parsed.errors
        for f in facts:
            out[f[0]]["stated"] += 1
            out[f[0]]["correct"] += _is_true(f, things, truth)
        for f in truth:
            out[f[0]]["truth"] += 1
            out[f[0]]["recalled"] += f in facts
    del out["relation"]["truth"], out["relation"]["recalled"]
    return {**out, "unreadable": unreadable}
