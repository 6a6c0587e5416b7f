"""Translation models: source token ids (B, S) -> target token ids, one token at a time.

The line of models that tells how attention came to translation, all over one shared BPE
vocabulary whose embedding is also the output layer (Press & Wolf 2017):

- ``seq2seq_gru`` (Cho et al. 2014, "Learning Phrase Representations using RNN
  Encoder-Decoder"; Sutskever et al. 2014): a bidirectional GRU reads the source; its two
  final states, concatenated, are the one vector ``c`` the decoder gets. The decoder GRU
  starts from ``tanh(W c)`` and reads ``[embedding of the last word, c]`` at every step.
- ``seq2seq_attention`` (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly
  Learning to Align and Translate"): the same encoder, but at every step the decoder scores
  each source annotation ``h_j`` against its previous state ``s_{i-1}``,
  ``e_ij = vᵀ tanh(W s_{i-1} + U h_j)``, ``α_ij = softmax_j(e_ij)`` over the real source
  tokens, and reads the context ``c_i = Σ_j α_ij h_j`` instead of one fixed vector. ``s_0``
  is ``tanh(W_s ←h_1)``, the backward state at the first source token, as in the paper.
- ``seq2seq_transformer`` (``models/seq2seq_transformer.py``, Vaswani et al. 2017).

Both GRU decoders end with the paper's "deep output": ``t = tanh(W_o [s_i, c_i, E y_{i-1}])``
and the logits ``t Eᵀ + b``.

Every model decodes through the same three methods that ``models/search`` drives (greedy
and beam search): ``encode(src)`` -> memory, ``start(memory)`` -> state, ``step(memory,
state, words)`` -> (logits, state, attention weights over the source); ``forward(src,
words)`` is teacher forcing, the logits of every next word at once, and equals stepping
(tested). A pad position of the source never gets attention weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.models.base import check, register_model
from neuralab.models.search import step_through

ARCHS = ("gru", "attention", "transformer")
State = tuple[Tensor, ...]  # every tensor's first dimension is the batch
Memory = tuple[Tensor, ...]


@dataclass(frozen=True)
class Seq2SeqConfig:
    vocab_size: int = 8000  # the shared source/target BPE vocabulary, specials included
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    max_len: int = 128  # the most tokens of a source, and of a target with its <eos>
    arch: str = "attention"
    d_embed: int = 256  # gru, attention: the word embedding
    hidden: int = 256  # gru, attention: each encoder direction's and the decoder's state
    attention: int = 256  # attention: the additive score's hidden layer
    d_model: int = 256  # transformer
    n_layers: int = 3  # transformer: encoder blocks, and as many decoder blocks
    n_heads: int = 4  # transformer
    mlp_ratio: int = 4  # transformer
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check(self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        check(self.vocab_size >= 4, f"vocab_size must be >= 4, got {self.vocab_size}")
        for key in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, key)
            check(0 <= value < self.vocab_size, f"{key} must be in [0, vocab_size), got {value}")
        check(self.max_len >= 2, f"max_len must be >= 2, got {self.max_len}")
        for key in ("d_embed", "hidden", "attention", "d_model", "n_layers", "mlp_ratio"):
            check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}")
        check(
            self.n_heads >= 1 and self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}",
        )
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")


class Seq2Seq(nn.Module):
    """Base of the translators: the shared embedding, and teacher forcing by stepping."""

    Config: ClassVar[type[Seq2SeqConfig]] = Seq2SeqConfig
    kind: ClassVar[str] = "seq2seq"
    attends: ClassVar[bool] = True

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.bos, self.eos = config.bos_id, config.eos_id

    def check_ids(self, src: Tensor) -> None:
        c = self.config
        check(
            src.dim() == 2 and 1 <= src.shape[1] <= c.max_len,
            f"expected (B, S) source ids with 1 <= S <= {c.max_len}, got {tuple(src.shape)}",
        )

    def encode(self, src: Tensor) -> Memory:
        raise NotImplementedError

    def start(self, memory: Memory) -> State:
        raise NotImplementedError

    def step(self, memory: Memory, state: State, words: Tensor) -> tuple[Tensor, State, Tensor]:
        """(B,) last words -> (B, V) logits of the next, the new state and (B, S) attention
        weights over the source ((B, 0) for a model that does not attend)."""
        raise NotImplementedError

    def forward(self, src: Tensor, words: Tensor, need_weights: bool = False):
        """Teacher forcing: (B, T) input words (``<bos>`` first) -> (B, T, V) logits of the
        words after each (and the (B, T, S) attention weights if asked)."""
        logits, weights = step_through(self, self.encode(src), words)
        return (logits, weights) if need_weights else logits

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class GRUTranslator(Seq2Seq):
    """``seq2seq_gru`` and ``seq2seq_attention`` (see the module's docstring)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__(config)
        c = config
        self.attends = c.arch == "attention"
        self.embed = nn.Embedding(c.vocab_size, c.d_embed, padding_idx=c.pad_id)
        self.encoder = nn.GRU(c.d_embed, c.hidden, batch_first=True, bidirectional=True)
        self.init = nn.Linear(c.hidden if self.attends else 2 * c.hidden, c.hidden)
        if self.attends:
            self.w_a = nn.Linear(c.hidden, c.attention, bias=False)  # W s_{i-1}
            self.u_a = nn.Linear(2 * c.hidden, c.attention)  # U h_j (+ its bias)
            self.v_a = nn.Linear(c.attention, 1, bias=False)
            self.cell = nn.GRUCell(c.d_embed + 2 * c.hidden, c.hidden)
        else:
            self.decoder = nn.GRU(c.d_embed + 2 * c.hidden, c.hidden, batch_first=True)
        self.deep_out = nn.Linear(c.hidden + 2 * c.hidden + c.d_embed, c.d_embed)
        self.out_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.drop = nn.Dropout(c.dropout)

    def encode(self, src: Tensor) -> Memory:
        """(annotations (B, S, 2h), keep (B, S), U h_j (B, S, a) or (B, S, 0), the fixed
        context [→h_S, ←h_1] (B, 2h), ←h_1 (B, h))."""
        self.check_ids(src)
        keep = src != self.config.pad_id
        lengths = keep.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.embed(src)), lengths, batch_first=True, enforce_sorted=False
        )
        out, last = self.encoder(packed)  # last: (2, B, h), the forward and backward ends
        annotations, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=src.shape[1]
        )
        context = torch.cat([last[0], last[1]], 1)
        keys = self.u_a(annotations) if self.attends else annotations[..., :0]
        return annotations, keep, keys, context, last[1]

    def start(self, memory: Memory) -> State:
        _, _, _, context, backward = memory
        return (torch.tanh(self.init(backward if self.attends else context)),)

    def attend(self, memory: Memory, s: Tensor) -> tuple[Tensor, Tensor]:
        """Bahdanau's context of state ``s`` (B, h): (c (B, 2h), α (B, S))."""
        return self.align(memory, self.w_a(s))

    def align(self, memory: Memory, query: Tensor) -> tuple[Tensor, Tensor]:
        """The context and weights from ``W s`` (B, a), already projected."""
        annotations, keep, keys, _, _ = memory
        scores = torch.tanh(query[:, None] + keys) @ self.v_a.weight[0]  # (B, S)
        alpha = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=1)
        return torch.bmm(alpha[:, None], annotations)[:, 0], alpha

    def loop_weights(self, memory: Memory) -> tuple[Memory, Tensor, Tensor]:
        """What every step multiplies by, made once: ``w_s`` = [W_hh; W], so that one product
        of ``s`` serves the cell and the score, and ``w_c``, the context's part of the cell's
        input weights; under autocast they and the annotations are cast once here, not at
        every step."""
        w_s = torch.cat([self.cell.weight_hh, self.w_a.weight])
        w_c = self.cell.weight_ih[:, self.config.d_embed :]
        kind = memory[0].device.type
        if torch.is_autocast_enabled(kind):
            dtype = torch.get_autocast_dtype(kind)
            memory = (memory[0].to(dtype), *memory[1:])
            w_s, w_c = w_s.to(dtype), w_c.to(dtype)
        return memory, w_s, w_c

    def advance(
        self, memory: Memory, s: Tensor, gi_words: Tensor, w_s: Tensor, w_c: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One attention step from ``s_{i-1}``: the GRU cell's arithmetic (PyTorch's gate
        order r, z, n), with the word's part of its input, ``gi_words`` (B, 3h), computed
        ahead, and the weights of ``loop_weights``. -> (s_i, c_i, α_i)."""
        h = self.config.hidden
        both = (s @ w_s.T).float()  # the gates' arithmetic and the state stay fp32 in autocast
        context, alpha = self.align(memory, both[:, 3 * h :])
        gi = gi_words.float() + (context @ w_c.T).float()
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = (both[:, : 3 * h] + self.cell.bias_hh).chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (s - n), context, alpha

    def word_gates(self, embedded: Tensor) -> Tensor:
        """The words' part of the cell's input gates, for one step or all at once."""
        weight = self.cell.weight_ih[:, : self.config.d_embed]
        return F.linear(embedded, weight, self.cell.bias_ih)

    def logits(self, s: Tensor, context: Tensor, embedded: Tensor) -> Tensor:
        t = torch.tanh(self.deep_out(self.drop(torch.cat([s, context, embedded], -1))))
        return self.drop(t) @ self.embed.weight.T + self.out_bias

    def step(self, memory: Memory, state: State, words: Tensor) -> tuple[Tensor, State, Tensor]:
        (s,) = state
        e = self.drop(self.embed(words))  # (B, d)
        if self.attends:
            memory, w_s, w_c = self.loop_weights(memory)
            s, context, alpha = self.advance(memory, s, self.word_gates(e), w_s, w_c)
        else:
            context, alpha = memory[3], memory[0].new_zeros(len(words), 0)
            s = self.decoder(torch.cat([e, context], 1)[:, None], s[None])[1][0]
        return self.logits(s, context, e), (s,), alpha

    def forward(self, src: Tensor, words: Tensor, need_weights: bool = False):
        """Teacher forcing. Only the recurrence is stepped; the word projections before it
        and the deep output and vocabulary logits after it run once over all (B, T)."""
        memory = self.encode(src)
        e = self.drop(self.embed(words))  # (B, T, d)
        s = self.start(memory)[0]
        if self.attends:
            gi_words = self.word_gates(e)
            memory, w_s, w_c = self.loop_weights(memory)
            states, contexts, alphas = [], [], []
            for t in range(words.shape[1]):
                s, context, alpha = self.advance(memory, s, gi_words[:, t], w_s, w_c)
                states.append(s)
                contexts.append(context)
                alphas.append(alpha)
            states, contexts = torch.stack(states, 1), torch.stack(contexts, 1)
            weights = torch.stack(alphas, 1)
        else:
            contexts = memory[3][:, None].expand(-1, words.shape[1], -1)
            states, _ = self.decoder(torch.cat([e, contexts], -1), s[None])
            weights = e.new_zeros(*words.shape, 0)
        out = self.logits(states, contexts, e)
        return (out, weights) if need_weights else out


register_model("seq2seq_gru", arch="gru")(GRUTranslator)
register_model("seq2seq_attention", arch="attention")(GRUTranslator)


def label_smoothed_loss(
    logits: Tensor, targets: Tensor, pad_id: int, smoothing: float = 0.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean cross-entropy of the (B, T) non-pad target tokens with label smoothing, and
    ``count``, ``correct`` and the unsmoothed ``ce`` (summed) over them.

    ``F.cross_entropy(..., label_smoothing=ε)``'s value, (1 - ε)·NLL + ε·mean over classes
    of -log p, from one log-softmax that also gives ``ce`` (tested equal to it)."""
    flat, goal = logits.flatten(0, 1).float(), targets.flatten()
    log_p = F.log_softmax(flat, -1)
    valid = goal != pad_id
    count = valid.sum()
    nll = F.nll_loss(log_p, goal, ignore_index=pad_id, reduction="sum")
    total = nll
    if smoothing:
        uniform = -(log_p.mean(-1) * valid).sum()
        total = (1 - smoothing) * nll + smoothing * uniform
    with torch.no_grad():
        correct = ((flat.argmax(-1) == goal) & valid).sum()
    return total / count, {"count": count, "correct": correct, "ce": nll.detach()}
