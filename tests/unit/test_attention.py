"""Tests of neuralab.models.attention: the two attention implementations against each other, an
explicit per-head loop and torch.nn.MultiheadAttention, in float64 so that agreement to 1e-10
means the same formula, not merely a similar one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neuralab.errors import UserError
from neuralab.models.attention import Block, MultiHeadSelfAttention

B, T, D, NH = 3, 7, 24, 4  # d_head = 6


def attention(causal: bool, attn_impl: str = "sdpa", seed: int = 0) -> MultiHeadSelfAttention:
    """An eval-mode float64 attention module whose init depends only on ``seed``."""
    torch.manual_seed(seed)
    return MultiHeadSelfAttention(D, NH, causal, attn_impl=attn_impl).double().eval()


def tokens(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_and_manual_agree(causal: bool) -> None:
    """With the same weights, the fused kernel and the spelled-out formula give the same
    (B, T, d_model) output to 1e-10 in float64, causal or not: they compute one function."""
    x = tokens()
    sdpa, manual = attention(causal, "sdpa"), attention(causal, "manual")
    y_sdpa, y_manual = sdpa(x), manual(x)
    assert y_sdpa.shape == y_manual.shape == (B, T, D)
    torch.testing.assert_close(y_sdpa, y_manual, rtol=0, atol=1e-10)


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
@pytest.mark.parametrize("causal", [True, False])
def test_weights_are_distributions(causal: bool, attn_impl: str) -> None:
    """need_weights=True returns (B, nh, T, T) weights whose rows sum to 1, and the same output
    as without them (sdpa switches to the manual path to get them). A causal map is 0 above
    the diagonal, so its first row is all on token 0; a bidirectional map is positive."""
    x = tokens()
    module = attention(causal, attn_impl)
    y, weights = module(x, need_weights=True)
    assert weights.shape == (B, NH, T, T)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, NH, T, dtype=torch.float64))
    torch.testing.assert_close(y, module(x), rtol=0, atol=1e-10)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    if causal:
        assert (weights[..., future] == 0).all()
        assert (weights[..., 0, 0] == 1).all()
    else:
        assert (weights > 0).all()


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_causal_mask_blocks_the_future(attn_impl: str) -> None:
    """Changing tokens t+1.. never changes the outputs at positions <= t (for every t); without
    the mask, it changes every position."""
    x = tokens()
    for causal in (True, False):
        module = attention(causal, attn_impl)
        y = module(x)
        for t in range(T - 1):
            x2 = x.clone()
            x2[:, t + 1 :] = torch.randn(B, T - t - 1, D, dtype=torch.float64)
            y2 = module(x2)
            if causal:
                torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=0, atol=1e-12)
                assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :])
            else:
                assert not torch.allclose(y2[:, : t + 1], y[:, : t + 1])


def per_head_loop(module: MultiHeadSelfAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """Attention written head by head from the weight matrices: no view, no transpose."""
    W, b = module.qkv.weight, module.qkv.bias  # (3D, D), (3D,): rows are [Wq; Wk; Wv]
    hs = D // NH
    heads = []
    for h in range(NH):
        rows = slice(h * hs, (h + 1) * hs)
        q = x @ W[:D][rows].T + b[:D][rows]  # (B, T, hs)
        k = x @ W[D : 2 * D][rows].T + b[D : 2 * D][rows]
        v = x @ W[2 * D :][rows].T + b[2 * D :][rows]
        scores = q @ k.transpose(1, 2) / math.sqrt(hs)  # (B, T, T)
        if causal:
            scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v)  # (B, T, hs)
    return module.proj(torch.cat(heads, dim=-1))  # (B, T, D): head h in columns h*hs..


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
@pytest.mark.parametrize("causal", [True, False])
def test_heads_split_and_merge_like_a_loop(causal: bool, attn_impl: str) -> None:
    """The module equals an explicit loop over heads (slice q, k, v per head, attend, concat,
    project) to 1e-10: heads are split from and merged back to (B, T, d_model) correctly."""
    x = tokens()
    module = attention(causal, attn_impl)
    torch.testing.assert_close(module(x), per_head_loop(module, x, causal), rtol=0, atol=1e-10)


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
@pytest.mark.parametrize("causal", [True, False])
def test_matches_torch_multihead_attention(causal: bool, attn_impl: str) -> None:
    """Oracle: torch.nn.MultiheadAttention with our in/out projection weights copied in gives
    the same output (and the same per-head weights) to 1e-10 in float64."""
    x = tokens()
    ours = attention(causal, attn_impl)
    mha = nn.MultiheadAttention(D, NH, batch_first=True, dtype=torch.float64).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(ours.qkv.weight)
        mha.in_proj_bias.copy_(ours.qkv.bias)
        mha.out_proj.weight.copy_(ours.proj.weight)
        mha.out_proj.bias.copy_(ours.proj.bias)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # True = blocked
    y_ref, w_ref = mha(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
    y, weights = ours(x, need_weights=True)
    torch.testing.assert_close(ours(x), y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(weights, w_ref, rtol=0, atol=1e-10)


def test_block_is_pre_layernorm_residual() -> None:
    """Block(x) = h + mlp(ln2(h)) with h = x + attn(ln1(x)), MLP = Linear(d, 4d) -> GELU ->
    Linear(4d, d); it returns its attention weights when asked, without changing the output."""
    torch.manual_seed(0)
    block = Block(D, NH, causal=True).double().eval()
    x = tokens()
    h = x + block.attn(block.ln1(x))
    m = block.ln2(h)
    expected = h + block.mlp.proj(nn.functional.gelu(block.mlp.fc(m)))
    assert block.mlp.fc.out_features == 4 * D
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)
    y, weights = block(x, need_weights=True)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)
    assert weights.shape == (B, NH, T, T)


def test_bad_arguments_are_user_errors() -> None:
    """Heads that do not divide d_model, or an unknown implementation, are one-line UserErrors."""
    with pytest.raises(UserError, match="multiple of n_heads"):
        MultiHeadSelfAttention(10, 3, causal=True)
    with pytest.raises(UserError, match="attn_impl"):
        MultiHeadSelfAttention(12, 3, causal=True, attn_impl="flash")


def test_sdpa_attends_in_fp32_under_cpu_bf16_autocast() -> None:
    """Under bf16 autocast on a CPU the projections run in bf16 but the attention itself in
    fp32 (the CPU's bf16 flash-attention backward is ~10x slower): the output equals fp32
    attention of the same bf16-rounded q, k, v, and gradients flow back in fp32."""
    torch.manual_seed(0)
    module = MultiHeadSelfAttention(D, NH, causal=True).eval()
    x = torch.randn(B, T, D, requires_grad=True)
    seen = {}

    def spy(mod, args, out):
        seen["attn_in"] = args[0].dtype

    handle = module.proj.register_forward_hook(spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    handle.remove()
    assert seen["attn_in"] == torch.float32  # what attention produced, before the projection
    with torch.autocast("cpu", dtype=torch.bfloat16):
        qkv = module.qkv(x)
    assert qkv.dtype == torch.bfloat16
    q, k, v = qkv.float().split(D, dim=2)
    q, k, v = (t.view(B, T, NH, D // NH).transpose(1, 2) for t in (q, k, v))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected = expected.transpose(1, 2).reshape(B, T, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = module.proj(expected)
    torch.testing.assert_close(y, reference, rtol=0, atol=0)
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_rotary_scores_depend_only_on_relative_position() -> None:
    """RoPE's defining property (Su et al. 2021, Eq. 16): with the same query vector at every
    position and the same key vector at every position, the score of position m against n
    depends on m - n only (the score matrix is Toeplitz), and rotation keeps vector norms."""
    from neuralab.models.attention import rotary_tables, rotate

    g = torch.Generator().manual_seed(0)
    length, hs = 12, 8
    qv, kv = torch.randn(hs, dtype=torch.float64, generator=g), torch.randn(hs, generator=g)
    cis = rotary_tables(length, hs)
    q = rotate(qv.expand(1, length, 1, hs), cis)[0, :, 0]  # (T, hs)
    k = rotate(kv.double().expand(1, length, 1, hs), cis)[0, :, 0]
    scores = q @ k.T  # (T, T)
    torch.testing.assert_close(scores[1:, 1:], scores[:-1, :-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(q.norm(dim=-1), qv.norm().expand(length), rtol=0, atol=1e-12)
    assert not torch.allclose(scores[0, 0], scores[0, 1])  # positions do matter


def test_rotation_matrices_equal_rotate() -> None:
    """The one-token generation step turns a row by ``x @ R[t]``; that equals ``rotate``'s
    complex product at every position t (float64, to 1e-12), and R[t] is orthogonal."""
    from neuralab.models.attention import rotary_tables, rotate
    from neuralab.models.cached import rotation_matrices

    length, hs = 10, 8
    cis = rotary_tables(length, hs)
    x = torch.randn(
        3, length, 2, hs, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    R = rotation_matrices(cis, torch.float64)  # (T, hs, hs)
    by_matrix = torch.einsum("btnh,thk->btnk", x, R)
    torch.testing.assert_close(by_matrix, rotate(x, cis), rtol=0, atol=1e-12)
    eye = torch.eye(hs, dtype=torch.float64).expand(length, hs, hs)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_rotary_sdpa_and_manual_agree_and_stay_causal(causal: bool) -> None:
    """With rotary embeddings both implementations still compute one function (1e-10 in
    float64), and the causal version still never looks ahead."""
    torch.manual_seed(0)
    sdpa = MultiHeadSelfAttention(D, NH, causal, rope_len=T).double().eval()
    manual = MultiHeadSelfAttention(D, NH, causal, attn_impl="manual", rope_len=T).double()
    manual.load_state_dict(sdpa.state_dict())
    x = tokens()
    torch.testing.assert_close(sdpa(x), manual.eval()(x), rtol=0, atol=1e-10)
    if causal:
        changed = x.clone()
        changed[:, -1] += 1.0
        torch.testing.assert_close(sdpa(changed)[:, :-1], sdpa(x)[:, :-1], rtol=0, atol=0)
