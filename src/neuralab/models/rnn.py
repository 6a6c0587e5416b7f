"""Recurrent language models: a vanilla RNN (Elman 1990), an LSTM (Hochreiter & Schmidhuber 1997,
with the forget gate of Gers et al. 2000) and a GRU (Cho et al. 2014), written from their
equations, with a fast path on torch's fused kernels that uses the same parameters.

Embedding -> a stack of ``n_layer`` cells -> linear head, as in char-rnn (Karpathy 2015) and
Zaremba et al. 2014, "Recurrent Neural Network Regularization", whose dropout is applied to the
non-recurrent connections only: between layers and before the head.

Each cell keeps torch's parameter layout (``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H),
``bias_ih``, ``bias_hh``, gates stacked in torch's order), so ``impl="scratch"`` (a Python loop
over time steps, readable and probe-able) and ``impl="fused"`` (``torch.lstm`` / ``torch.gru`` /
``torch.rnn_tanh``, the kernels behind ``nn.LSTM``, cuDNN on a GPU) compute the same function of
the same state dict: switching needs no weight conversion.

The GRU is torch's (and cuDNN's) variant: the reset gate scales ``W_hn h + b_hn`` *after* the
matmul, where Cho et al. reset ``h`` before it.

The state carried between chunks has torch's layout: (n_layer, B, H) for the RNN and GRU, a
tuple (h, c) of two of those for the LSTM. Truncated backpropagation through time (Williams &
Peng 1990) carries it across chunks with ``detach_state`` in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neuralab.models.base import (
    LanguageModel,
    TextModelConfig,
    check,
    check_choice,
    register_model,
)

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h, or (h, c) for the LSTM
Gates = dict[str, torch.Tensor]


def detach_state(state: Any) -> Any:
    """``state`` cut from the graph of the chunk that produced it (for truncated BPTT): a tensor,
    a tuple of tensors (the LSTM's (h, c)) or None."""
    if state is None:
        return None
    if isinstance(state, tuple | list):
        return type(state)(s.detach() for s in state)
    return state.detach()


class RecurrentCell(nn.Module):
    """One step of a recurrent layer, with torch's parameter layout for ``n_gates`` gates.

    ``forward(x, state)`` maps x_t (B, I) and the state to the next state; with
    ``return_gates=True`` it also returns the gate activations, each (B, H), for probes.
    """

    n_gates: int = 1
    has_cell_state: bool = False

    def __init__(self, d_in: int, d_hidden: int) -> None:
        super().__init__()
        self.d_in, self.d_hidden = d_in, d_hidden
        self.weight_ih = nn.Parameter(torch.empty(self.n_gates * d_hidden, d_in))
        self.weight_hh = nn.Parameter(torch.empty(self.n_gates * d_hidden, d_hidden))
        self.bias_ih = nn.Parameter(torch.empty(self.n_gates * d_hidden))
        self.bias_hh = nn.Parameter(torch.empty(self.n_gates * d_hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias uniform(-1/sqrt(H), 1/sqrt(H)), as torch initialises its RNNs."""
        bound = self.d_hidden**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def flat_weights(self) -> list[torch.Tensor]:
        """[w_ih, w_hh, b_ih, b_hh]: this layer's share of the fused kernels' weight list."""
        return [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]

    def zero_state(self, x: torch.Tensor) -> State:
        h = x.new_zeros(x.shape[0], self.d_hidden)  # (B, H)
        return (h, torch.zeros_like(h)) if self.has_cell_state else h

    def step(self, x: torch.Tensor, state: State) -> tuple[State, Gates]:
        """(B, I) input and state -> (next state, gate activations)."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, state: State | None = None, return_gates: bool = False
    ) -> State | tuple[State, Gates]:
        """x_t (B, I) and state (None: zeros) -> next state, and the gates if asked for."""
        new_state, gates = self.step(x, self.zero_state(x) if state is None else state)
        return (new_state, gates) if return_gates else new_state

    def extra_repr(self) -> str:
        return f"{self.d_in}, {self.d_hidden}"


class RNNCell(RecurrentCell):
    """Elman's RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh). No gates."""

    n_gates = 1

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, Gates]:
        pre = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        return torch.tanh(pre), {}  # (B, H)


class LSTMCell(RecurrentCell):
    """The LSTM with a forget gate, gates in torch's order i, f, g, o:

        i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh)
        i, f, g, o = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
        c' = f * c + i * g
        h' = o * tanh(c')

    The additive update of c is what lets gradients flow over long spans (Hochreiter &
    Schmidhuber 1997); f lets the cell forget (Gers et al. 2000).
    """

    n_gates = 4
    has_cell_state = True

    def step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], Gates]:
        h, c = state  # (B, H) each
        pre = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        i, f, g, o = pre.chunk(4, dim=1)  # (B, H) each
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return (h, c), {"i": i, "f": f, "g": g, "o": o}


class GRUCell(RecurrentCell):
    """The GRU in torch's formulation, gates in torch's order r, z, n:

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)       reset
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)       update
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))    candidate
        h' = (1 - z) * n + z * h

    z interpolates between keeping h and taking the candidate, a coupled input/forget gate
    with no separate cell state (Cho et al. 2014).
    """

    n_gates = 3

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, Gates]:
        x_r, x_z, x_n = F.linear(x, self.weight_ih, self.bias_ih).chunk(3, dim=1)  # (B, H) each
        h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)  # (B, H) each
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, {"r": r, "z": z, "n": n}


CELLS: dict[str, type[RecurrentCell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
FUSED = {"rnn": torch.rnn_tanh, "lstm": torch.lstm, "gru": torch.gru}


@dataclass(frozen=True)
class RNNConfig(TextModelConfig):
    cell: str = "lstm"  # "rnn" (tanh), "lstm" or "gru"
    n_layer: int = 2
    d_hidden: int = 256
    d_embed: int = 0  # 0: same as d_hidden
    dropout: float = 0.0  # between layers and before the head (Zaremba et al. 2014)
    impl: str = "fused"  # "fused": torch's kernels; "scratch": the cells above, step by step

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("cell", self.cell, CELLS)
        check(self.n_layer >= 1, f"n_layer must be >= 1, got {self.n_layer}")
        check(self.d_hidden >= 1, f"d_hidden must be >= 1, got {self.d_hidden}")
        check(self.d_embed >= 0, f"d_embed must be >= 0 (0: d_hidden), got {self.d_embed}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check_choice("impl", self.impl, ("fused", "scratch"))


def _layer(state: State | None, layer: int) -> State | None:
    """Layer ``layer``'s (B, H) slice of a per-layer (n_layer, B, H) state (or (h, c) pair)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return (state[0][layer], state[1][layer])
    return state[layer]


def _stack(states: list[State]) -> State:
    """Per-layer (B, H) states -> one (n_layer, B, H) state (or (h, c) pair)."""
    if isinstance(states[0], tuple):
        return (torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states]))
    return torch.stack(states)


@register_model("lstm", cell="lstm")
@register_model("gru", cell="gru")
@register_model("rnn", cell="rnn")
class RecurrentLM(LanguageModel):
    """Token ids -> embedding -> ``n_layer`` recurrent layers -> dropout -> next-token logits.

    Parameters live in the cells (``layers.0.weight_ih``, ...), and both implementations read
    them, so one state dict serves both and they agree to rounding error in eval mode. (In
    training mode their dropout masks are drawn differently.)
    """

    Config = RNNConfig
    recurrent = True

    def __init__(self, config: RNNConfig) -> None:
        super().__init__(config)
        d_embed = config.d_embed or config.d_hidden
        self.embed = nn.Embedding(config.vocab_size, d_embed)
        cell = CELLS[config.cell]
        self.layers = nn.ModuleList(
            cell(d_embed if layer == 0 else config.d_hidden, config.d_hidden)
            for layer in range(config.n_layer)
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_hidden, config.vocab_size)

    def zero_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The all-zeros state of ``batch_size`` streams, which ``state=None`` stands for."""
        weight = self.head.weight
        shape = (self.config.n_layer, batch_size, self.config.d_hidden)
        h = torch.zeros(shape, device=device or weight.device, dtype=dtype or weight.dtype)
        return (h, torch.zeros_like(h)) if self.config.cell == "lstm" else h

    def forward_features(
        self, idx: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """(B, T) token ids and the carried state (None: zeros) -> ((B, T, H) features after
        the last dropout, the state after step T)."""
        x = self.embed(idx)  # (B, T, E)
        if self.config.impl == "fused":
            x, state = self._fused(x, state)
        else:
            x, state, _ = self._scratch(x, state)
        return self.drop(x), state  # (B, T, H)

    def _fused(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """All layers and steps in one call of torch's kernel, on the cells' own tensors."""
        c = self.config
        if state is None:
            state = self.zero_state(x.shape[0], x.device, x.dtype)
        weights = [w for cell in self.layers for w in cell.flat_weights()]
        # has_biases, num_layers, dropout, train, bidirectional, batch_first
        args = (weights, True, c.n_layer, c.dropout, self.training, False, True)
        if c.cell == "lstm":
            out, h, cell_state = torch.lstm(x, state, *args)
            return out, (h, cell_state)  # (B, T, H), ((L, B, H), (L, B, H))
        out, h = FUSED[c.cell](x, state, *args)
        return out, h  # (B, T, H), (L, B, H)

    def _scratch(
        self, x: torch.Tensor, state: State | None, record: bool = False
    ) -> tuple[torch.Tensor, State, dict[str, torch.Tensor]]:
        """Layer by layer, step by step through the cells. With ``record``, also every layer's
        hidden state, cell state (LSTM) and gates at every step, each (n_layer, B, T, H)."""
        finals: list[State] = []
        recorded: list[dict[str, torch.Tensor]] = []
        for layer, cell in enumerate(self.layers):
            if layer > 0:
                x = F.dropout(x, self.config.dropout, self.training)  # between layers
            s = _layer(state, layer)
            outputs, steps = [], []
            for t in range(x.shape[1]):
                s, gates = cell(x[:, t], s, return_gates=True)
                h = s[0] if isinstance(s, tuple) else s  # (B, H)
                outputs.append(h)
                if record:
                    cell_state = {"c": s[1]} if isinstance(s, tuple) else {}
                    steps.append({"h": h, **cell_state, **gates})
            x = torch.stack(outputs, dim=1)  # (B, T, H)
            finals.append(s)
            if record:
                recorded.append({k: torch.stack([st[k] for st in steps], dim=1) for k in steps[0]})
        traced = {k: torch.stack([r[k] for r in recorded]) for k in recorded[0]} if record else {}
        return x, _stack(finals), traced

    def trace(self, idx: torch.Tensor, state: State | None = None) -> dict[str, torch.Tensor]:
        """Run the scratch path on (B, T) token ids and return every layer's activations at
        every step, each (n_layer, B, T, H): "h" (hidden states), and for the LSTM "c" (cell
        states) and gates "i", "f", "g", "o"; for the GRU gates "r", "z", "n".

        For probes of what single cells track (Karpathy et al. 2015, "Visualizing and
        Understanding Recurrent Networks"). Dropout follows the module's train/eval mode, and
        gradients the caller's grad mode (wrap in ``torch.no_grad()`` to keep no graph).
        """
        _, _, traced = self._scratch(self.embed(idx), state, record=True)
        return traced
