"""Image captioners: a CNN encoder and an LSTM decoder, without and with attention.

``caption_lstm`` is NeuralTalk's design (Karpathy & Fei-Fei 2015; Vinyals et al. 2015,
"Show and Tell"): the image, encoded into one vector, is the LSTM's first input, and the
words follow. Here the vector is a linear map of a 4×4 pooling of the encoder's map, so
that, like the fully connected layer of the paper's CNN, it keeps where things are.

``caption_attention`` is "Show, Attend and Tell" (Xu et al. 2015) with soft attention: at
every word the decoder weighs the P cells of the encoder's map by Bahdanau's additive score
``e = v·tanh(W_a a_i + W_h h)``, ``α = softmax(e)``, reads ``z = β·Σ α_i a_i`` (β a sigmoid
gate of h), and feeds ``[embedding of the last word, z]`` to an LSTM cell; its initial state
is a tanh layer of the mean feature. Its loss adds the doubly stochastic regulariser
``λ·mean_i (1 − Σ_t α_ti)²`` (each cell attended about once over the caption; the mean over
cells, as the authors' code and common reimplementations scale it).

With ``deep_output`` the next word is read as in the paper's eq. 7 and the authors' code
(``ctx2out``, ``prev2out``): ``L_o·tanh(E y_{t-1} + L_h h_t + L_z z_t)``, so the attended
context reaches the word directly and not only through the LSTM's state.

Both may learn, beside the captions, to name what the encoder's map holds (``objects`` > 0,
the weight of that loss): a linear layer reads each cell's feature and predicts the class of
the item centred in the cell (or none), and that item's colour and size. This is how a
captioner without pretrained weights gets its encoder a grounding signal like the ImageNet
(or Visual Genome) labels that the papers' encoders were trained on.

Both decode one word at a time through the same three methods, which the searches of
``models.search`` drive: ``encode(x)`` -> memory, ``start(memory)`` -> state,
``step(memory, state, words)`` -> (logits, state, attention weights or None). ``forward(x,
words)`` is teacher forcing: logits of every next word at once, the attention weights and
the cells' object logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralab.models.base import ImageModelConfig, Normalize, check, register_model
from neuralab.models.dense import BLOCK_OPTIONS, conv_bn_relu
from neuralab.models.resnet import stage
from neuralab.models.search import step_through

PAD, BOS, EOS = 0, 1, 2  # the ids the caption vocabulary reserves (data.captions)

State = tuple[Tensor, ...]  # every tensor's first dimension is the batch
Memory = tuple[Tensor, ...]


@dataclass(frozen=True)
class CaptionerConfig(ImageModelConfig):
    in_channels: int = 3
    image_size: int = 64
    vocab_size: int = 64  # words of the caption vocabulary, its four specials included
    max_len: int = 24  # the most words a caption may have, <eos> included
    widths: tuple[int, ...] = (32, 64, 128)  # encoder stages at strides 2, 4 and 8
    stride: int = 8  # the encoder map's stride: 8, or 4 (its last stage keeps stride 4)
    blocks: int = 1  # basic blocks per encoder stage
    embed: int = 128  # word embedding size
    hidden: int = 256  # LSTM state size
    attention: int = 128  # size of the additive attention's hidden layer
    dropout: float = 0.2  # before the output layer
    alpha_c: float = 1.0  # λ of the doubly stochastic attention regulariser
    deep_output: bool = False  # the word from tanh(E y + L_h h + L_z z), not h alone
    objects: float = 0.0  # weight of the loss naming each cell's item (0: no such head)
    object_targets: tuple[int, ...] = ()  # values of each of a cell's targets (the caption
    # task gives them: class or none, colour, size)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.vocab_size >= 5, f"vocab_size must be >= 5, got {self.vocab_size}")
        check(self.max_len >= 2, f"max_len must be >= 2, got {self.max_len}")
        check(len(self.widths) == 3, f"widths must be 3 stage sizes, got {self.widths}")
        check(all(w >= 1 for w in self.widths), f"widths must be >= 1, got {self.widths}")
        check(self.blocks >= 1, f"blocks must be >= 1, got {self.blocks}")
        check(self.stride in (4, 8), f"stride must be 4 or 8, got {self.stride}")
        for key in ("embed", "hidden", "attention"):
            check(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.alpha_c >= 0, f"alpha_c must be >= 0, got {self.alpha_c}")
        check(self.objects >= 0, f"objects must be >= 0, got {self.objects}")
        check(all(n >= 2 for n in self.object_targets),
              f"object_targets must be sizes >= 2, got {self.object_targets}")  # fmt: skip
        check(not self.objects or self.object_targets,
              "objects needs object_targets: the sizes of a cell's targets")  # fmt: skip
        check(self.image_size >= 16, f"captioners need image_size >= 16, got {self.image_size}")


class Encoder(nn.Module):
    """(B, C, H, W) normalised images -> (B, widths[-1], H/s, W/s) features for the config's
    stride s: a stride-2 stem and three stages of ResNet basic blocks at strides 2, 4 and s."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        w = config.widths
        strides = (1, 2, config.stride // 4)
        self.stem = conv_bn_relu(config.in_channels, w[0], stride=2)
        self.stages = nn.Sequential(
            *(
                stage(c_in, c_out, config.blocks, s, BLOCK_OPTIONS)
                for c_in, c_out, s in zip((w[0], *w[:-1]), w, strides, strict=True)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


class Captioner(nn.Module):
    """Base of the captioners: the encoder, the word embedding and the output layer."""

    Config: ClassVar[type[CaptionerConfig]] = CaptionerConfig
    kind: ClassVar[str] = "caption"
    attends: ClassVar[bool] = False
    bos: ClassVar[int] = BOS  # the ids models.search reads
    eos: ClassVar[int] = EOS

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        self.encoder = Encoder(config)
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        self.drop = nn.Dropout(config.dropout)
        readout = config.embed if config.deep_output else config.hidden  # eq. 7's L_o, or h
        self.out = nn.Linear(readout, config.vocab_size)
        self.objects = (
            nn.Linear(config.widths[-1], sum(config.object_targets)) if config.objects else None
        )

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> the encoder's (B, C', h, w) map."""
        return self.encoder(self.normalize(x))

    def read(self, features: Tensor) -> Memory:
        """The decoder's memory of the encoder's map."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Memory:
        return self.read(self.features(x))

    def start(self, memory: Memory) -> State:
        raise NotImplementedError

    def step(self, memory: Memory, state: State, words: Tensor) -> tuple[Tensor, State, Tensor]:
        """(B,) last words -> (B, V) logits of the next, the new state, (B, P) attention
        weights (an empty (B, 0) tensor for a model that does not attend)."""
        raise NotImplementedError

    def decode_teacher(self, memory: Memory, words: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, V) logits and (B, T, P) attention weights of teacher forcing."""
        return step_through(self, memory, words)

    def forward(self, x: Tensor, words: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher forcing: (B, T) input words (``<bos>`` first) -> (B, T, V) logits of the
        words after each, (B, T, P) attention weights ((B, T, 0) without attention) and
        (B, P, K) logits of the cells' objects ((B, P, 0) without the objects head)."""
        features = self.features(x)
        logits, alphas = self.decode_teacher(self.read(features), words)
        cells = features.flatten(2).transpose(1, 2)  # (B, P, C)
        objects = self.objects(cells) if self.objects is not None else cells[..., :0]
        return logits, alphas, objects

    def loss(
        self, out: tuple[Tensor, Tensor, Tensor], targets: Tensor, cells: Tensor | None = None
    ) -> tuple[Tensor, dict]:
        """Mean cross-entropy of the (B, T) target words (``<pad>`` ignored), plus the
        attention regulariser for a model that attends, plus ``objects`` × the objects
        loss of (B, P, len(object_targets)) ``cells`` targets (-1: none, e.g. no colour for
        an empty cell); ``count`` and ``correct`` are over the non-pad words."""
        logits, alphas, objects = out
        valid = targets != PAD
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=PAD)
        total = ce
        if self.attends and self.config.alpha_c > 0:
            total = total + self.config.alpha_c * doubly_stochastic(alphas, valid)
        stats = {"ce": ce.detach()}
        if self.objects is not None and cells is not None:
            named = objects_loss(objects, cells, self.config.object_targets)
            total = total + self.config.objects * named
            stats["objects"] = named.detach()
        correct = ((logits.detach().argmax(-1) == targets) & valid).sum()
        return total, {"count": valid.sum(), "correct": correct, **stats}

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def objects_loss(logits: Tensor, cells: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """The sum over targets of the mean cross-entropy of each cell's target: (B, P, Σ sizes)
    logits split by ``sizes``, (B, P, len(sizes)) targets, -1 ignored."""
    parts = logits.float().split(list(sizes), -1)
    return sum(
        F.cross_entropy(part.flatten(0, 1), cells[..., k].flatten(), ignore_index=-1)
        for k, part in enumerate(parts)
    )


def doubly_stochastic(alphas: Tensor, valid: Tensor) -> Tensor:
    """mean over images and cells of (1 − Σ_t α_ti)², the sum over the caption's real words
    only (Xu et al. 2015, eq. 14): (B, T, P) weights, (B, T) mask."""
    attended = (alphas.float() * valid[..., None]).sum(1)  # (B, P)
    return ((1 - attended) ** 2).mean()


@register_model("caption_lstm")
class NeuralTalk(Captioner):
    """The image vector is the LSTM's first input; then ``<bos>`` and the words."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__(config)
        check(not config.deep_output, "deep_output reads an attended context: caption_attention")
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.project = nn.Linear(config.widths[-1] * 16, config.embed)
        self.lstm = nn.LSTM(config.embed, config.hidden, batch_first=True)

    def read(self, features: Tensor) -> Memory:
        return (self.project(self.pool(features).flatten(1)),)  # (B, E) from (B, C·16)

    def start(self, memory: Memory) -> State:
        _, (h, c) = self.lstm(memory[0][:, None])  # read the image vector
        return h[0], c[0]  # (B, H) each

    def step(self, memory: Memory, state: State, words: Tensor) -> tuple[Tensor, State, Tensor]:
        h, c = state
        out, (h, c) = self.lstm(self.embed(words)[:, None], (h[None], c[None]))
        logits = self.out(self.drop(out[:, 0]))  # (B, V)
        return logits, (h[0], c[0]), out.new_zeros(len(words), 0)

    def decode_teacher(self, memory: Memory, words: Tensor) -> tuple[Tensor, Tensor]:
        """The whole sequence through the fused LSTM at once (the same as ``step`` by step)."""
        sequence = torch.cat([memory[0][:, None], self.embed(words)], 1)  # (B, 1 + T, E)
        out, _ = self.lstm(sequence)
        logits = self.out(self.drop(out[:, 1:]))  # (B, T, V)
        return logits, logits.new_zeros(*words.shape, 0)


@register_model("caption_attention")
class ShowAttendTell(Captioner):
    """Soft attention over the encoder's cells (H/8 × W/8, or H/4 × W/4) at every word."""

    attends = True

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__(config)
        c, h, a = config.widths[-1], config.hidden, config.attention
        self.init_h, self.init_c = nn.Linear(c, h), nn.Linear(c, h)
        self.att_features, self.att_hidden = nn.Linear(c, a), nn.Linear(h, a)
        self.att_score = nn.Linear(a, 1)
        self.gate = nn.Linear(h, c)
        self.cell = nn.LSTMCell(config.embed + c, h)
        if config.deep_output:  # L_h and L_z to the embedding size (E y is added)
            self.out_h, self.out_z = nn.Linear(h, config.embed), nn.Linear(c, config.embed)

    def read(self, features: Tensor) -> Memory:
        cells = features.flatten(2).transpose(1, 2)  # (B, P, C)
        return cells, self.att_features(cells)  # and W_a a_i, (B, P, A), computed once

    def start(self, memory: Memory) -> State:
        mean = memory[0].mean(1)  # (B, C)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def attend(self, memory: Memory, h: Tensor) -> tuple[Tensor, Tensor]:
        """The gated context z (B, C) and the weights α (B, P) of Bahdanau's additive score."""
        features, projected = memory
        scores = self.att_score(torch.tanh(projected + self.att_hidden(h)[:, None]))  # (B, P, 1)
        alpha = torch.softmax(scores.squeeze(-1), dim=-1)  # (B, P)
        context = torch.bmm(alpha[:, None], features)[:, 0]  # (B, C)
        return torch.sigmoid(self.gate(h)) * context, alpha

    def step(self, memory: Memory, state: State, words: Tensor) -> tuple[Tensor, State, Tensor]:
        h, c = state
        context, alpha = self.attend(memory, h)
        embedded = self.embed(words)
        h, c = self.cell(torch.cat([embedded, context], -1), (h, c))
        if self.config.deep_output:
            read = torch.tanh(embedded + self.out_h(h) + self.out_z(context))
            return self.out(self.drop(read)), (h, c), alpha
        return self.out(self.drop(h)), (h, c), alpha
