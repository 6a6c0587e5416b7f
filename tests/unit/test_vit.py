"""Tests of neuralab.models.vit: shapes through patches and class token, the config's checks,
and the attention maps. (The registry-wide image-model contract is in test_models.py.)"""

from __future__ import annotations

import pytest
import torch

from neuralab.errors import UserError
from neuralab.models import ImageClassifier, create_model, list_models
from neuralab.models.vit import ViT

SMALL = dict(d_model=32, n_layer=2, n_heads=4)


@pytest.mark.parametrize("channels,size,patches", [(1, 28, 49), (3, 32, 64), (1, 8, 4)])
def test_shapes(channels: int, size: int, patches: int) -> None:
    """Defaults cut 28x28 into 7x7 = 49 patches and 32x32 into 8x8 = 64 (8x8 into 4): the
    position table has 1 + N rows, features are the class token's (B, d_model), logits
    (B, num_classes)."""
    torch.manual_seed(0)
    model = create_model("vit", in_channels=channels, image_size=size, num_classes=7)
    assert isinstance(model, ViT) and isinstance(model, ImageClassifier)
    assert model.pos_embed.shape == (1, 1 + patches, 128)
    x = torch.rand(2, channels, size, size)
    assert model.forward_features(x).shape == (2, 128)
    assert model(x).shape == (2, 7)


def test_registered_with_defaults() -> None:
    """ "vit" is an image model with the documented defaults."""
    assert "vit" in list_models(kind="image")
    c = create_model("vit").config
    assert (c.patch_size, c.d_model, c.n_layer, c.n_heads, c.mlp_ratio) == (4, 128, 6, 4, 4)
    assert (c.dropout, c.attn_impl) == (0.0, "sdpa")


def test_patch_size_must_divide_image_size() -> None:
    """A patch size that does not tile the image is a one-line UserError naming both sizes;
    so is feeding an image of another size than the model was built for."""
    with pytest.raises(UserError, match="image_size=28 is not divisible by patch_size=5"):
        create_model("vit", image_size=28, patch_size=5)
    model = create_model("vit", image_size=28, **SMALL)
    with pytest.raises(UserError, match="28x28"):
        model(torch.rand(1, 1, 32, 32))


def test_class_token_sees_every_patch() -> None:
    """Attention is bidirectional: changing only the last patch (the token furthest from the
    class token at position 0) changes the class token's features."""
    torch.manual_seed(0)
    model = create_model("vit", image_size=8, **SMALL).eval()
    x = torch.rand(1, 1, 8, 8)
    x2 = x.clone()
    x2[..., 4:, 4:] = torch.rand(1, 1, 4, 4)  # last of the 2x2 patches
    with torch.no_grad():
        assert not torch.allclose(model.forward_features(x), model.forward_features(x2))


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_attention_maps(attn_impl: str) -> None:
    """One (B, nh, 1 + N, 1 + N) map per layer with rows summing to 1 and, being bidirectional,
    weight on every token; the two attention paths give the same logits in float64."""
    torch.manual_seed(0)
    model = create_model("vit", in_channels=3, image_size=32, attn_impl=attn_impl, **SMALL)
    model = model.double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        maps = model.attention_maps(x)
        assert len(maps) == 2
        for weights in maps:
            assert weights.shape == (2, 4, 65, 65)
            torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 65, dtype=torch.float64))
            assert (weights > 0).all()
        other = create_model(
            "vit",
            in_channels=3,
            image_size=32,
            attn_impl="manual" if attn_impl == "sdpa" else "sdpa",
            **SMALL,
        ).double()
        other.load_state_dict(model.state_dict())
        torch.testing.assert_close(other.eval()(x), model(x), rtol=0, atol=1e-10)


def test_conv_stem_gives_the_same_token_grid() -> None:
    """stem="conv" (Xiao et al. 2021) maps 28x28 images to the same 7x7 grid of d_model
    tokens as 4x4 patchify, so the Transformer behind it is unchanged; a patch size that is
    not a power of 2 is a UserError."""
    torch.manual_seed(0)
    conv = create_model("vit", stem="conv", image_size=28).eval()
    patch = create_model("vit", image_size=28).eval()
    x = torch.rand(2, 1, 28, 28)
    assert conv.patch_embed(x).shape == patch.patch_embed(x).shape == (2, 128, 7, 7)
    assert conv(x).shape == (2, 10)
    assert conv.attention_maps(x)[0].shape == (2, 4, 50, 50)
    with pytest.raises(UserError, match="power-of-2"):
        create_model("vit", stem="conv", patch_size=7, image_size=28)
