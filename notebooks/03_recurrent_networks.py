# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Recurrent networks: RNN, LSTM and GRU from their equations
#
# A recurrent network reads a sequence one element at a time and carries a state from step
# to step: Elman's RNN (1990) squashes it through a tanh at every step, so its gradient
# fades or explodes over long spans (Bengio, Simard & Frasconi 1994); the LSTM (Hochreiter &
# Schmidhuber 1997, with the forget gate of Gers et al. 2000) adds a cell state updated by
# addition, through gates; the GRU (Cho et al. 2014) couples the gates and drops the cell
# state. This notebook writes the three cells from their equations, checks them against
# PyTorch's own layers, then trains a small character-level LSTM on tiny shakespeare
# (Karpathy 2015, "The Unreasonable Effectiveness of Recurrent Neural Networks"), samples
# from it and looks for single cells that track something about the text (Karpathy, Johnson
# & Fei-Fei 2015, "Visualizing and Understanding Recurrent Networks").
#
# It runs in under a minute on two CPU cores. The full preset, `neuralab train
# shakespeare_lstm` (2 layers of 512, 3,000 steps), is sized for 10 minutes on two cores;
# `python benchmarks/lm.py --only budget` measures it beside the GPT of the same budget.

# %%
import matplotlib.pyplot as plt  # in a notebook pyplot is yours; neuralab never touches it
import torch
from IPython.display import Image, display
from torch import nn

import neuralab
from neuralab import config, data
from neuralab.models.rnn import GRUCell, LSTMCell, RNNCell
from neuralab.plots import curves_figure
from neuralab.probe.lstm_cells import correlations, plot_saturation, saturation, text_features
from neuralab.train import fit, load_model, new_run_dir, sample

torch.manual_seed(0)

# %% [markdown]
# ## The LSTM in four lines
#
# One step of the LSTM maps the input x and the state (h, c) to the next state. The four
# gates come out of one matrix product, stacked in PyTorch's order input, forget, cell
# candidate, output:
#
#     i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh)
#     c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
#     h' = σ(o) ⊙ tanh(c')
#
# The oracle is `torch.nn.LSTM`, whose weights the equations borrow. Both run in float64 over
# 50 steps, so a wrong gate order, a missing bias or a sigmoid where a tanh belongs would show
# as a difference of order 0.1, and rounding as one of order 1e-16.


# %%
def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


x = torch.randn(3, 50, 8, dtype=torch.float64)  # (B, T, I)
reference = nn.LSTM(8, 16, batch_first=True, dtype=torch.float64)
names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
h = c = torch.zeros(3, 16, dtype=torch.float64)
outputs = []
for t in range(x.shape[1]):
    h, c = lstm_step(x[:, t], h, c, *[getattr(reference, f"{name}_l0") for name in names])
    outputs.append(h)
with torch.no_grad():
    diff = (torch.stack(outputs, dim=1) - reference(x)[0]).abs().max().item()
print(f"four-line LSTM vs nn.LSTM, 50 steps: max abs diff {diff:.1e}")

# %% [markdown]
# ## neuralab's three cells against PyTorch's three layers
#
# `neuralab.models.rnn` holds the same equations as modules (`RNNCell`, `LSTMCell`,
# `GRUCell`), in PyTorch's parameter layout, so a torch layer's weights load into them by
# name. Each cell's `step` is run over the sequence and compared with `nn.RNN`, `nn.LSTM`
# and `nn.GRU`: this proves the cells compute PyTorch's functions, gate order included.


# %%
def run_cell(cell, x):
    """The cell's hidden state after every step of x: (B, T, H)."""
    state, outputs = cell.zero_state(x[:, 0]), []
    for t in range(x.shape[1]):
        state, _ = cell.step(x[:, t], state)
        outputs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outputs, dim=1)


for ours, theirs in ((RNNCell, nn.RNN), (LSTMCell, nn.LSTM), (GRUCell, nn.GRU)):
    reference = theirs(8, 16, batch_first=True, dtype=torch.float64)
    cell = ours(8, 16).double()
    cell.load_state_dict({name: getattr(reference, f"{name}_l0") for name in names})
    with torch.no_grad():
        diff = (run_cell(cell, x) - reference(x)[0]).abs().max().item()
    print(f"{ours.__name__:8} vs nn.{theirs.__name__:4}: max abs diff {diff:.1e}")

# %% [markdown]
# ## The check can tell two GRUs apart
#
# PyTorch's (and cuDNN's) GRU applies the reset gate after the recurrent matrix product,
# r ⊙ (W_hn h + b_hn); Cho et al. 2014 reset the state before it, W_hn (r ⊙ h). The two are
# different functions of the same weights, and the oracle sees it: a GRU written the paper's
# way does not match `nn.GRU`.


# %%
def cho_gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
    x_r, x_z, x_n = (x @ w_ih.T + b_ih).chunk(3, dim=1)
    (w_r, w_z, w_n), (b_r, b_z, b_n) = w_hh.chunk(3), b_hh.chunk(3)
    r = torch.sigmoid(x_r + h @ w_r.T + b_r)
    z = torch.sigmoid(x_z + h @ w_z.T + b_z)
    n = torch.tanh(x_n + (r * h) @ w_n.T + b_n)  # torch: x_n + r * (h @ w_n.T + b_n)
    return (1 - z) * n + z * h


reference = nn.GRU(8, 16, batch_first=True, dtype=torch.float64)
h, outputs = torch.zeros(3, 16, dtype=torch.float64), []
for t in range(x.shape[1]):
    h = cho_gru_step(x[:, t], h, *[getattr(reference, f"{name}_l0") for name in names])
    outputs.append(h)
with torch.no_grad():
    diff = (torch.stack(outputs, dim=1) - reference(x)[0]).abs().max().item()
print(f"Cho et al.'s GRU vs nn.GRU: max abs diff {diff:.1e}")

# %% [markdown]
# ## The whole model: the equations and PyTorch's kernel share one set of weights
#
# `RecurrentLM` (registered as `rnn`, `lstm` and `gru`) stacks the cells between an embedding
# and a linear head. With `impl="scratch"` it steps through the cells in Python, which is
# what `trace` uses to record every gate; with `impl="fused"` (the default, for training) it
# hands the same tensors to `torch.lstm`, the kernel behind `nn.LSTM`. One state dict, two
# paths, the same logits: so a model trained on the fast path can be traced on the slow one.

# %%
sizes = {"vocab_size": 65, "n_layer": 2, "d_hidden": 32}
scratch = neuralab.create_model("lstm", impl="scratch", **sizes).double()
fused = neuralab.create_model("lstm", impl="fused", **sizes).double()
fused.load_state_dict(scratch.state_dict())
idx = torch.randint(0, 65, (2, 100))
with torch.no_grad():
    diff = (scratch(idx)[0] - fused(idx)[0]).abs().max().item()
print(f"2-layer LSTM, scratch vs fused, 100 characters: max abs diff {diff:.1e}")

# %% [markdown]
# ## Tiny shakespeare, one character at a time
#
# The preset reads the text as 64 contiguous streams and trains with truncated
# backpropagation through time over 64 characters, the hidden state carried from one batch
# to the next (char-rnn's scheme). Here it shrinks to 2 layers of 128 units, batches of 32
# streams and 500 steps (one pass over the training text), in float32 so the number below is
# the same on any CPU, and on one thread: at this size a second thread costs more in
# synchronisation than it saves, many times more when other work shares the cores. The last
# 5% of the text is the test split, the 5% before it validation.

# %%
cfg = config.load(
    "shakespeare_lstm",
    [
        "model.d_hidden=128",
        "model.dropout=0",
        "train.batch_size=32",
        "train.max_steps=500",
        "train.val_every=100",
        "train.precision=fp32",
        "train.threads=1",
    ],
)
tokenizer, splits = data.load_token_splits(cfg.data)
print(f"{tokenizer.vocab_size} characters:", repr("".join(tokenizer.chars)))
print({name: len(tokens) for name, tokens in splits.items()})
print(tokenizer.decode(splits["train"][:200]))

# %% [markdown]
# ## Train
#
# A guess among 65 characters costs ln(65) ≈ 4.17 nats per character.

# %%
run_dir = new_run_dir(None, cfg, name="notebook_shakespeare_lstm")
summary = fit(cfg, run_dir, progress=False)
print(f"best val loss {summary['val/loss']:.3f} nats/char at step {summary['best_step']}")

display(curves_figure(run_dir))  # the learning curves, as `neuralab report` draws them

# %% [markdown]
# ## What it writes
#
# 300 characters after a prompt, at temperature 0.8. After one epoch the model
# has the shape of the play (speaker names in capitals, short lines, a colon and a newline
# after a name) and many real words, but little sense.

# %%
print("ROMEO:\n" + sample(run_dir, "ROMEO:\n", 300, temperature=0.8, seed=1))

# %% [markdown]
# ## Looking for interpretable cells
#
# `trace` runs the trained weights through the scratch path over 3,000 validation characters
# and returns every layer's cell state c and gates at every character. Each cell unit is
# then correlated with features of the text (`neuralab.probe.lstm_cells.text_features`):
# the position in the line, the last character before a newline, and being inside an
# all-capitals word (the speaker names). The unit with the largest |r| for each of the first
# two is drawn below as Karpathy et al. drew theirs: every character's background is tanh(c)
# of that unit (blue -1, red +1). `neuralab probe lstm RUN_DIR` writes such pages as HTML.

# %%
model = load_model(run_dir)
text = tokenizer.decode(splits["val"][:3000])
with torch.no_grad():
    trace = model.trace(tokenizer.encode(text)[None, :])  # each (L, 1, T, H)
cells = trace["c"][:, 0]  # (L, T, H)
best = {}
for name in ("position_in_line", "line_end", "capitals_word"):
    r = correlations(cells, text_features(text)[name]).nan_to_num(0)  # (L, H)
    layer, unit = divmod(r.abs().argmax().item(), r.shape[1])
    best[name] = (layer, unit, r[layer, unit].item())
    print(f"{name:17} layer {layer}, unit {unit:3}: r = {r[layer, unit]:+.2f}")

# %%
shown = text[:320]
lines = shown.split("\n")
fig, axes = plt.subplots(2, 1, figsize=(11, 0.5 * len(lines) + 1))
for ax, name in zip(axes, ("position_in_line", "capitals_word"), strict=True):
    layer, unit, r = best[name]
    grid = torch.full((len(lines), max(len(line) for line in lines) + 1), float("nan"))
    row = col = 0
    for ch, value in zip(shown, torch.tanh(cells[layer, : len(shown), unit]), strict=True):
        grid[row, col] = value
        ax.text(col, row, "⏎" if ch == "\n" else ch, ha="center", va="center", fontsize=7)
        row, col = (row + 1, 0) if ch == "\n" else (row, col + 1)
    ax.imshow(grid, cmap="bwr", vmin=-1, vmax=1, aspect="auto")
    ax.set_title(f"{name}: layer {layer}, unit {unit} (r = {r:+.2f})", fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# In a model this small and this young the clearest units mark the structure of the play
# more than Karpathy et al.'s line-length counter: the unit that best follows the position in
# the line mostly tells a line of speech (long) from a speaker's name (short), and the
# capitals unit is on inside the name and off in the speech. Line ends are barely tracked.
#
# ## How saturated are the gates?
#
# Karpathy et al.'s Fig. 3: for every unit, the fraction of characters at which its input,
# forget and output gates are nearly shut (< 0.1, left-saturated) or nearly open (> 0.9,
# right-saturated). A forget gate high on the left edge is almost always open: its cell
# keeps what it holds over long spans. The printout counts them per layer.

# %%
display(Image(plot_saturation(trace, run_dir / "plots" / "lstm_gates.png")))
open_fraction = saturation(trace["f"][:, 0])[1]  # (L, H): how often each forget gate is > 0.9
for layer, fraction in enumerate(open_fraction):
    print(f"layer {layer}: {(fraction > 0.5).sum()} of {len(fraction)} forget gates open "
          "more than half the time")  # fmt: skip

# %% [markdown]
# The best validation loss of this 2×128 LSTM after 500 steps, in nats per character.
# Expected: validation loss 1.99 ± 0.05 (seeds 0 to 3 gave 1.96 to 1.99).

# %%
print({"metric": "validation loss", "value": summary["val/loss"]})
