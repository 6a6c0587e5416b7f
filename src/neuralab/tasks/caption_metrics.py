"""Caption metrics: corpus BLEU-1..4 by sacreBLEU, and CIDEr-D.

BLEU (Papineni et al. 2002) is sacreBLEU's corpus-level score over all references (Post
2018), given here as a fraction (sacreBLEU prints 0–100); its signature says how it was
computed. CIDEr-D (Vedantam et al. 2015) is re-implemented as the COCO caption evaluation
code computes it (``pycocoevalcap``'s ``cider_scorer``; a test checks it against that code's
output): TF-IDF vectors of 1- to 4-grams, the document frequencies taken over the
references of the scored corpus, each n-gram's hypothesis weight clipped by the reference's,
a Gaussian penalty on the length difference (σ = 6), averaged over n and references, ×10.
"""

from __future__ import annotations

import math
from collections import Counter

import sacrebleu

CIDER_N = 4
CIDER_SIGMA = 6.0


def bleu(hypotheses: list[str], references: list[list[str]]) -> dict:
    """``bleu1`` .. ``bleu4`` in [0, 1] and sacreBLEU's ``signature`` of BLEU-4."""
    streams = [list(r) for r in zip(*references, strict=True)]  # sacreBLEU: one list per ref
    out = {}
    for n in range(1, 5):
        metric = sacrebleu.metrics.BLEU(max_ngram_order=n)
        out[f"bleu{n}"] = metric.corpus_score(hypotheses, streams).score / 100
        if n == 4:
            out["signature"] = str(metric.get_signature())
    return out


def _ngrams(sentence: str) -> Counter:
    words = sentence.split()
    return Counter(
        tuple(words[i : i + n]) for n in range(1, CIDER_N + 1) for i in range(len(words) - n + 1)
    )


def _vector(counts: Counter, df: Counter, log_images: float):
    """Per n: {ngram: tf·idf}, the vector norms, and the sentence's length in words."""
    vec = [{} for _ in range(CIDER_N)]
    norm = [0.0] * CIDER_N
    length = 0
    for gram, tf in counts.items():
        n = len(gram) - 1
        vec[n][gram] = float(tf) * (log_images - math.log(max(1.0, df[gram])))
        norm[n] += vec[n][gram] ** 2
        if n == 1:  # as the reference code counts it: the number of bigrams
            length += tf
    return vec, [math.sqrt(v) for v in norm], length


def _similarity(hyp, ref) -> list[float]:
    (vh, nh, lh), (vr, nr, lr) = hyp, ref
    penalty = math.exp(-((lh - lr) ** 2) / (2 * CIDER_SIGMA**2))
    out = []
    for n in range(CIDER_N):
        value = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
        if nh[n] != 0 and nr[n] != 0:
            value /= nh[n] * nr[n]
        out.append(value * penalty)
    return out


def cider_d(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus CIDEr-D: the mean over images of each hypothesis's score against its refs."""
    if not hypotheses:
        return 0.0
    ref_counts = [[_ngrams(r) for r in refs] for refs in references]
    df = Counter(g for refs in ref_counts for g in set().union(*refs))
    log_images = math.log(float(len(references)))
    total = 0.0
    for hyp, refs in zip(hypotheses, ref_counts, strict=True):
        h = _vector(_ngrams(hyp), df, log_images)
        score = [0.0] * CIDER_N
        for ref in refs:
            score = [
                a + b
                for a, b in zip(score, _similarity(h, _vector(ref, df, log_images)), strict=True)
            ]
        total += sum(score) / CIDER_N / len(refs) * 10.0
    return total / len(hypotheses)
