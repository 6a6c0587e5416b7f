"""CTC (issue 23): decoding against hand cases and a brute-force oracle over every path,
the loss's length plumbing against the same oracle, the length check, and the models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from neuralab.errors import UserError
from neuralab.models import create_model
from neuralab.models.ctc import (
    as_tensor,
    beam_decode,
    check_lengths,
    collapse,
    greedy_decode,
    needed_steps,
    prefix_beam_search,
)
from neuralab.tasks.ctc import CTCTask, Labels, pack_targets, unpack_targets


def labelling_probs(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """The oracle: the probability of every labelling, summed over all V^T paths."""
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=len(probs)):
        p = math.prod(probs[t, v] for t, v in enumerate(path))
        key = tuple(collapse(list(path)))
        out[key] = out.get(key, 0.0) + p
    return out


def test_collapse_merges_runs_then_drops_blanks():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0]) == [1, 1, 2]
    assert collapse([0, 0, 0]) == []
    assert collapse([3, 3, 3]) == [3]
    assert collapse([2, 0, 2, 2, 0, 0, 2]) == [2, 2, 2]
    logits = torch.tensor([[[0.0, 5, 0], [0, 5, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]]])
    assert greedy_decode(logits, torch.tensor([5])) == [[1, 1, 2]]
    assert greedy_decode(logits, torch.tensor([2])) == [[1]]  # only its own steps


def test_prefix_beam_search_finds_the_best_labelling_where_the_best_path_misses_it():
    """Three steps of P(blank) = 0.6, P(a) = 0.4: the best path is "---" (0.216), so greedy
    reads "", but "a" has six paths worth 0.688 (hand-computed), the most probable labelling."""
    probs = np.array([[0.6, 0.4]] * 3)
    assert greedy_decode(torch.tensor(probs)[None].log(), torch.tensor([3])) == [[]]
    labels, log_p = prefix_beam_search(np.log(probs), beam=4)
    assert labels == [1] and math.isclose(math.exp(log_p), 0.688, rel_tol=1e-9)
    assert math.isclose(labelling_probs(probs)[(1,)], 0.688, rel_tol=1e-9)


def test_prefix_beam_search_equals_brute_force_on_random_distributions():
    """With a beam as wide as the prefixes, the search is exact: its labelling and
    probability are the oracle's argmax, over 20 random (4 steps x 3 symbols) cases."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        probs = rng.dirichlet(np.ones(3) * 0.7, size=4)
        oracle = labelling_probs(probs)
        best = max(oracle, key=oracle.get)
        labels, log_p = prefix_beam_search(np.log(probs), beam=100)
        assert tuple(labels) == best
        assert math.isclose(math.exp(log_p), oracle[best], rel_tol=1e-9)


def test_beam_decode_reads_each_utterance_to_its_length():
    logits = torch.randn(3, 6, 4)
    lengths = torch.tensor([6, 3, 1])
    found = beam_decode(logits, lengths, beam=50)
    for b, n in enumerate(lengths.tolist()):
        probs = logits[b, :n].softmax(-1).double().numpy()
        oracle = labelling_probs(probs)
        assert tuple(found[b]) == max(oracle, key=oracle.get)


def test_lengths_too_short_for_a_transcript_are_a_clear_error():
    """A labelling with a repeat needs a blank between: "a a b" needs 4 steps."""
    assert needed_steps([1, 1, 2]) == 4 and needed_steps([1, 2, 1]) == 3 and needed_steps([]) == 0
    check_lengths(torch.tensor([4, 3]), [[1, 1, 2], [1, 2, 1]], "hint")
    with pytest.raises(UserError, match=r"utterance 0 gives 3 output steps.*need at least 4.*hint"):
        check_lengths(torch.tensor([3]), [[1, 1, 2]], "hint")


class FixedScores(torch.nn.Module):
    """A stand-in acoustic model: the same logits for any input, its lengths = frames."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x, frames):
        return self.logits, frames


def test_ctc_loss_is_the_negative_log_of_the_summed_paths():
    """The task's loss, through pack_targets/unpack_targets and the time-major transpose,
    equals the oracle: -log P(transcript) per utterance, averaged, with each utterance read
    to its own length."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, dtype=torch.float64)
    frames = torch.tensor([4, 3])
    labellings = [[1, 2], [2]]
    y = pack_targets(frames, labellings)
    assert torch.equal(unpack_targets(y)[0], frames)
    assert unpack_targets(y)[2].tolist() == [2, 1]
    task = CTCTask(Labels("spoken-digits", "words"))
    loss, stats = task.loss(FixedScores(logits), torch.zeros(2, 4, 1), y)
    expected = []
    for b, n in enumerate(frames.tolist()):
        oracle = labelling_probs(logits[b, :n].softmax(-1).numpy())
        expected.append(-math.log(oracle[tuple(labellings[b])]))
    assert math.isclose(float(loss), sum(expected) / 2, rel_tol=1e-6)
    assert int(stats["count"]) == 2


def test_labels_in_words_and_characters():
    words = Labels("spoken-digits", "words")
    assert (
        words.encode("three one four") == [4, 2, 5] and words.decode([4, 2, 5]) == "three one four"
    )
    chars = Labels("spoken-commands", "chars")
    ids = chars.encode("turn left")
    assert 0 not in ids and chars.decode(ids) == "turn left"
    assert as_tensor([[1, 2], []]).tolist() == [[1, 2], [0, 0]]


@pytest.mark.parametrize("name", ["ctc_lstm", "ctc_transformer"])
def test_acoustic_models_ignore_padding_and_report_their_lengths(name):
    """An utterance scores the same alone as padded in a batch beside a longer one (the
    packed LSTM's backward direction and the Transformer's key mask see no padding), and the
    output lengths are the front-end's (stride 4: ceil(ceil(T/2)/2))."""
    torch.manual_seed(0)
    model = create_model(name, mels=16, vocab_size=5, hidden=16, layers=2, d_model=16, n_layers=2)
    model.eval()
    long, short = torch.randn(1, 37, 16), torch.randn(1, 21, 16)
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, 0, 0, 16), value=7.0)])
    out, steps = model(batch, torch.tensor([37, 21]))
    assert steps.tolist() == [10, 6] and out.shape == (2, 10, 5)
    alone, alone_steps = model(short, torch.tensor([21]))
    assert alone_steps.tolist() == [6]
    assert torch.allclose(out[1, :5], alone[0, :5], atol=1e-5)
    two = create_model(name, mels=16, vocab_size=5, time_stride=2, hidden=8, d_model=16)
    assert two.out_lengths(torch.tensor([37])).tolist() == [19]
