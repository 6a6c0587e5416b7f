"""Tests of neuralab.models.gpt: GPT-2's init and weight tying, causality of the whole model,
decoding, the two attention paths, and that a small GPT can memorise a short text."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from neuralab.errors import UserError
from neuralab.models import LanguageModel, create_model, list_models
from neuralab.models.base import TokenSampler
from neuralab.models.gpt import GPT

SMALL = dict(vocab_size=11, block_size=16, n_layer=2, n_heads=2, d_model=16)


def gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return create_model("gpt", **{**SMALL, **overrides}).eval()


def ids(batch: int, length: int, vocab: int = SMALL["vocab_size"], seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_registered_with_defaults() -> None:
    """ "gpt" is a text model with the documented defaults, and forward gives (B, T, V) logits
    and no state (a Transformer carries none)."""
    assert "gpt" in list_models(kind="text")
    model = create_model("gpt")
    assert isinstance(model, LanguageModel) and not model.recurrent
    c = model.config
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_heads, c.d_model) == (65, 64, 4, 4, 128)
    assert (c.dropout, c.bias, c.attn_impl, c.tie_weights) == (0.0, True, "sdpa", True)
    logits, state = model(ids(2, 5, vocab=65))
    assert logits.shape == (2, 5, 65) and state is None


def test_loss_at_init_is_log_vocab() -> None:
    """At init the model predicts nearly uniformly: the loss is ln(V) plus about sigma^2 / 2
    (second-order expansion of log-sum-exp for logits of small std sigma; sigma ~ 0.02 sqrt(d)
    ~ 0.26 here, so ~0.03). Measured 0.033-0.039 over seeds 0-4, hence the 0.05 bound; a
    wrong init (std 1 weights, an untied unscaled head) is off by far more."""
    model = gpt(vocab_size=65, block_size=64, n_layer=4, n_heads=4, d_model=128)
    idx = ids(32, 64, vocab=65)
    with torch.no_grad():
        logits, _ = model(idx)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
    excess = loss.item() - math.log(65)
    assert abs(excess) < 0.05
    assert abs(excess - logits.var().item() / 2) < 0.01


def test_init_is_gpt2s() -> None:
    """Weights ~ N(0, 0.02), biases 0, and the residual projections ~ N(0, 0.02 / sqrt(2L))."""
    model = gpt(d_model=128, n_heads=4, n_layer=8, vocab_size=65, block_size=64)
    residual = {f"blocks.{i}.{p}.proj.weight" for i in range(8) for p in ("attn", "mlp")}
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            assert (p == 0).all(), name
        elif name in residual:
            assert abs(p.std().item() - 0.02 / 4) < 0.0005, name
        elif p.ndim == 2:
            assert abs(p.std().item() - 0.02) < 0.002, name


@pytest.mark.parametrize("tie", [True, False])
def test_weight_tying_and_param_count(tie: bool) -> None:
    """With tie_weights the head's weight is wte's (one Parameter, counted once); the count is
    V d + T d + L (12 d^2 + 13 d) + 2 d, plus V d for an untied head. Per layer: qkv 3d^2 + 3d,
    proj d^2 + d, fc 4d^2 + 4d, mlp proj 4d^2 + d, two LayerNorms 4d."""
    model = gpt(tie_weights=tie)
    assert (model.head.weight is model.wte.weight) == tie
    V, T, L, d = 11, 16, 2, 16
    expected = V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d + (0 if tie else V * d)
    assert model.num_params() == expected == 7_024 + (0 if tie else 176)
    assert len(list(model.parameters())) == len(model.state_dict()) - (1 if tie else 0)
    # tokens 0-4 in, so only the head writes into wte's rows 5-10: a gradient there iff tied
    F.cross_entropy(model(ids(2, 5, vocab=5))[0].flatten(0, 1), torch.arange(10)).backward()
    assert (model.wte.weight.grad[5:].abs().sum() > 0) == tie


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_whole_model_is_causal(attn_impl: str) -> None:
    """Changing the token at t+1 never changes the logits at positions <= t, through every
    layer; it does change the logits at t+1."""
    model = gpt(attn_impl=attn_impl).double()
    idx = ids(2, SMALL["block_size"])
    with torch.no_grad():
        logits, _ = model(idx)
        for t in range(idx.shape[1] - 1):
            changed = idx.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 1) % SMALL["vocab_size"]
            logits2, _ = model(changed)
            torch.testing.assert_close(logits2[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-12)
            assert not torch.allclose(logits2[:, t + 1], logits[:, t + 1])


def test_sdpa_and_manual_give_the_same_logits() -> None:
    """The attention implementation changes no parameter and no result: the same state_dict
    gives the same float64 logits to 1e-10 through either path."""
    sdpa, manual = gpt(attn_impl="sdpa").double(), gpt(seed=5, attn_impl="manual").double()
    manual.load_state_dict(sdpa.state_dict())
    idx = ids(3, 12)
    with torch.no_grad():
        torch.testing.assert_close(sdpa(idx)[0], manual(idx)[0], rtol=0, atol=1e-10)


def test_longer_than_block_size_is_a_user_error() -> None:
    """The position table has block_size rows: a longer input is a one-line UserError, while
    generate crops its context and can run past block_size."""
    model = gpt()
    with pytest.raises(UserError, match="block_size=16"):
        model(ids(1, 17))
    assert model.generate(ids(1, 10), 20, temperature=0).shape == (1, 30)


def test_generate_is_seeded_and_greedy() -> None:
    """A seeded generator makes sampling reproducible; temperature 0 is greedy argmax decoding
    (checked against an explicit loop), and top_k=1 at any temperature is the same."""
    model = gpt()
    prompt = ids(2, 3)

    def sample(seed: int) -> torch.Tensor:
        return model.generate(prompt, 12, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))
    greedy = prompt
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(greedy[:, -SMALL["block_size"] :])
            greedy = torch.cat([greedy, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(prompt, 12, temperature=0), greedy)
    top1 = model.generate(prompt, 12, temperature=1.5, top_k=1, generator=torch.Generator())
    assert torch.equal(top1, greedy)


def test_token_sampler_draws_from_the_softmax_of_the_top_k() -> None:
    """The Gumbel-max draws follow softmax(logits / T) over the k likeliest tokens: 40,000
    draws (one call, one row each) of a 5-token distribution at T = 0.7, top_k = 4, against
    the probabilities computed directly, within 4 standard errors each; the token outside
    the top 4 is never drawn. A seed repeats the draws; a shorter run is a prefix of a longer
    one (the noise is drawn in chunks, not per length)."""
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0])
    probs = torch.softmax(torch.cat([logits[:4] / 0.7, torch.tensor([-math.inf])]), 0)
    pick = TokenSampler(0.7, 4, torch.Generator().manual_seed(0))
    freq = torch.bincount(pick(logits.expand(40_000, 5)), minlength=5) / 40_000
    stderr = (probs * (1 - probs) / 40_000).sqrt()
    assert freq[4] == 0
    assert ((freq - probs).abs() <= 4 * stderr + 1e-12).all(), (freq, probs)

    def draws(n: int, seed: int) -> list[int]:
        pick = TokenSampler(1.0, None, torch.Generator().manual_seed(seed))
        return [int(pick(logits[None])[0]) for _ in range(n)]

    long = draws(150, 1)
    assert draws(100, 1) == long[:100] and draws(150, 1) == long and draws(150, 2) != long
    assert TokenSampler(0, None, None)(logits[None]).item() == 0  # temperature 0: argmax


def windows_by_recomputation(model: GPT, prompt: torch.Tensor, steps: int, seed: int):
    """The oracle: sampling where every step runs the whole model, without a cache, over the
    context window that generation promises (the last block_size tokens of the prompt; when
    full, it restarts from the last block_size // 2), drawing each token with the sampler
    generation uses. Returns the tokens and each step's logits."""
    size, idx = model.config.block_size, prompt
    start, all_logits = max(0, prompt.shape[1] - size), []
    pick = TokenSampler(0.9, None, torch.Generator().manual_seed(seed))  # generation's sampler
    with torch.no_grad():
        for _ in range(steps):
            if idx.shape[1] - start > size:
                start = idx.shape[1] - size // 2
            logits = model(idx[:, start:])[0][:, -1]
            all_logits.append(logits)
            idx = torch.cat([idx, pick(logits)[:, None]], dim=1)
    return idx, all_logits


@pytest.mark.parametrize(
    "options",
    [
        {"pos_embed": "learned", "attn_impl": "sdpa"},
        {"pos_embed": "rope", "attn_impl": "manual"},
        {"pos_embed": "rope", "attn_impl": "sdpa", "activation": "relu2", "bias": False},
    ],
    ids=lambda o: "-".join(map(str, o.values())),
)
@pytest.mark.parametrize("prompt_len", [3, 20])
def test_kv_cache_generation_equals_recomputation(options, prompt_len) -> None:
    """Sampling with the KV cache gives, token for token under a fixed seed, what running
    the whole model over each step's context window gives; within a block that is exactly
    nanoGPT's crop-and-rerun, and past it (60 new tokens, block_size 16: several shifts of
    the window; a prompt longer than a block) the window shifts as documented. In float64 so
    the only difference left is the order of sums; each step's logits agree to 1e-9."""
    model = gpt(**options).double()
    prompt = ids(2, prompt_len)
    expected, oracle_logits = windows_by_recomputation(model, prompt, 60, seed=3)
    got = model.generate(prompt, 60, 0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, expected)
    state, new = None, prompt
    with torch.no_grad():
        for step, want in enumerate(oracle_logits):
            logits, state = model._next_logits(expected[:, : prompt_len + step], new, state)
            torch.testing.assert_close(logits, want, rtol=0, atol=1e-9)
            new = expected[:, prompt_len + step : prompt_len + step + 1]
    within = model.generate(prompt[:, :3], 13, temperature=0)  # 16 tokens: one block
    greedy = prompt[:, :3]
    with torch.no_grad():
        for _ in range(13):
            greedy = torch.cat([greedy, model(greedy)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(within, greedy)


def test_attention_maps() -> None:
    """One (B, nh, T, T) map per layer, rows summing to 1, nothing above the diagonal."""
    model = gpt()
    with torch.no_grad():
        maps = model.attention_maps(ids(3, 9))
    assert len(maps) == SMALL["n_layer"]
    for weights in maps:
        assert weights.shape == (3, SMALL["n_heads"], 9, 9)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, SMALL["n_heads"], 9))
        assert (weights.triu(1) == 0).all()


TEXT = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. "
    "First Citizen: You are all resolved rather to die than to famish? All: Resolved. resolved."
)


def test_small_gpt_memorises_a_short_text() -> None:
    """Capacity and training signal end to end: a 2-layer, d=32 GPT trained with AdamW on one
    170-character text drives the loss near 0 (below 0.01: it took 51-56 steps at lr 1e-2 over
    seeds 0-5, so 200 leaves a wide margin), and greedy decoding from the first character then
    reproduces the whole text."""
    chars = sorted(set(TEXT))
    data = torch.tensor([chars.index(c) for c in TEXT])
    x, y = data[None, :-1], data[None, 1:]
    torch.manual_seed(0)
    model = create_model(
        "gpt", vocab_size=len(chars), block_size=len(TEXT), n_layer=2, n_heads=4, d_model=32
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(200):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.01
    out = model.generate(data[None, :1], len(TEXT) - 1, temperature=0)
    assert "".join(chars[i] for i in out[0]) == TEXT


def test_rope_relu2_gpt_is_causal_and_starts_at_ln_vocab() -> None:
    """The presets' GPT (rotary positions, ReLU² MLP, untied head) has no position table,
    stays causal (changing the last token changes no earlier logit) and starts near ln(vocab).
    (Tied to the embedding, the head would start with each token's logit for itself at
    ||e||²/0.02 ≈ 2.6, as nothing dilutes the token in the residual stream: loss ≈ 5.5.)"""
    torch.manual_seed(0)
    model = create_model(
        "gpt",
        vocab_size=65,
        block_size=16,
        pos_embed="rope",
        activation="relu2",
        tie_weights=False,
    )
    assert model.wpe is None and "wpe.weight" not in model.state_dict()
    model = model.double().eval()
    idx = torch.randint(0, 65, (2, 16))
    logits, _ = model(idx)
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 65
    torch.testing.assert_close(model(changed)[0][:, :-1], logits[:, :-1], rtol=0, atol=0)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
    assert abs(loss.item() - math.log(65)) < 0.05
