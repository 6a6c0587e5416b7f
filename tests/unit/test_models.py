"""Tests of neuralab.models: the model contract over the whole registry, oracles from the papers,
and the one-line errors of ``create_model``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralab.errors import UserError
from neuralab.models import (
    ImageClassifier,
    ImageModelConfig,
    Normalize,
    create_model,
    list_models,
    model_config_class,
    model_defaults,
)

SHAPES = [(1, 28), (1, 8), (3, 32)]  # (in_channels, image_size)


def build(name: str, channels: int = 1, size: int = 28, **overrides) -> ImageClassifier:
    return create_model(name, in_channels=channels, image_size=size, **overrides)


# ---- the contract, for every registered model ----------------------------------------------


@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("name", list_models(kind="image"))
def test_forward_backward(name: str, channels: int, size: int) -> None:
    """Every model maps (B, C, S, S) images in [0, 1] to finite (B, num_classes) logits, and the
    loss reaches every trainable parameter with a finite gradient."""
    torch.manual_seed(0)
    model = build(name, channels, size, num_classes=7)
    logits = model(torch.rand(3, channels, size, size))
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 3, 6])).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", list_models(kind="segment") + list_models(kind="detect"))
def test_dense_models_forward_backward(name: str) -> None:
    """Every segmenter maps (B, 3, S, S) to finite (B, classes, S, S) logits and every
    detector to a finite map of its heads' outputs; the loss (cross-entropy per pixel, the
    detector's own) reaches every parameter with a finite gradient."""
    torch.manual_seed(0)
    options = {"widths": (8, 16)} if name == "unet" else {"widths": (8, 8, 16, 16), "neck": 16}
    model = create_model(name, num_classes=5, in_channels=3, image_size=32, **options)
    out = model(torch.rand(2, 3, 32, 32))
    assert torch.isfinite(out).all()
    if model.kind == "segment":
        assert out.shape == (2, 5, 32, 32)
        loss = nn.functional.cross_entropy(out, torch.randint(0, 5, (2, 32, 32)))
    else:
        box = torch.tensor([[[4.0, 6, 20, 18, 3]], [[10, 2, 30, 31, 0]]])
        loss, _ = model.loss(out, box)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{pname}: no finite gradient"


@pytest.mark.parametrize("name", list_models(kind="image"))
def test_deterministic_under_seed(name: str) -> None:
    """The same seed gives the same initial weights and the same outputs (dropout included)."""
    x = torch.rand(4, 1, 28, 28)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build(name)
        runs.append((model.state_dict(), model(x)))
    (state_a, out_a), (state_b, out_b) = runs
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert torch.equal(out_a, out_b)


@pytest.mark.parametrize("name", list_models(kind="image"))
def test_features_feed_the_head(name: str) -> None:
    """``forward_features`` gives (B, D) with D = head.in_features, and the head maps exactly
    those features to the logits, so probes and linear evaluation can rely on the split."""
    model = build(name).eval()
    x = torch.rand(5, 1, 28, 28)
    features = model.forward_features(x)
    assert features.shape == (5, model.head.in_features)
    assert torch.equal(model.head(features), model(x))


@pytest.mark.parametrize("name", list_models(kind="image"))
def test_num_params_and_config(name: str) -> None:
    """``num_params`` counts every parameter (and only trainable ones when asked), and each model
    carries its frozen ``ImageModelConfig`` subclass, the one named by ``model_config_class``."""
    model = build(name)
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    model.head.weight.requires_grad_(False)
    assert model.num_params(trainable_only=True) == model.num_params() - model.head.weight.numel()
    assert isinstance(model.config, ImageModelConfig)
    assert type(model.config) is model_config_class(name) is type(model).Config
    with pytest.raises(AttributeError):
        model.config.num_classes = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("mlp", {"hidden": (), "dropout": 0.0}),
        ("mlp", {"activation": "tanh", "batchnorm": True}),
        ("cnn", {"pool": "flatten", "convs_per_stage": 2}),
        ("cnn", {"widths": (8, 8, 8, 8, 8)}),  # 28 -> 14 -> 7 -> 3 -> 1 -> (no pool) 1
        ("resnet20", {"shortcut": "B"}),
        ("plain20", {"activation": "sigmoid", "batchnorm": False}),
        ("resnet20", {"activation": "tanh", "widths": (8, 8, 8), "depth": 8}),
    ],
)
@pytest.mark.parametrize("channels,size", SHAPES)
def test_options_run(name: str, overrides: dict, channels: int, size: int) -> None:
    """Non-default options build and run forward/backward with finite results on every shape."""
    model = build(name, channels, size, **overrides)
    logits = model(torch.rand(2, channels, size, size))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.sum().backward()


# ---- oracles -------------------------------------------------------------------------------

# He et al. 2016, Table 6 lists ResNet-20 as 0.27M, ResNet-32 0.46M and ResNet-56 0.85M params.
# By hand, option A, 3 input channels, 10 classes (convs have no bias; BN has 2 per channel):
#   stem        3*16*9 + 2*16                                                      =     464
#   block 16    2 * (16*16*9 + 2*16)                                               =   4,672
#   first 32    16*32*9 + 2*32 + 32*32*9 + 2*32 = 13,952;  other 32: 2*(32*32*9 + 64) = 18,560
#   first 64    32*64*9 + 128 + 64*64*9 + 128  = 55,552;  other 64: 2*(64*64*9 + 128) = 73,984
#   head        64*10 + 10                                                         =     650
# n = 3: 464 + 3*4,672 + 13,952 + 2*18,560 + 55,552 + 2*73,984 + 650              = 269,722
# n = 9: 464 + 9*4,672 + 13,952 + 8*18,560 + 55,552 + 8*73,984 + 650              = 853,018
PAPER_PARAMS = {"resnet20": (0.27e6, 269_722), "resnet32": (0.46e6, 464_154)}
PAPER_PARAMS["resnet56"] = (0.85e6, 853_018)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_resnet_param_counts_match_paper(name: str) -> None:
    """CIFAR ResNets have the parameter counts of He et al. 2016 (Table 6): within 1% of the
    published figure and exactly the hand count above, so the architecture is the paper's."""
    published, exact = PAPER_PARAMS[name]
    count = build(name, 3, 32).num_params()
    assert abs(count - published) / published < 0.01
    assert count == exact


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_plain_twin_has_the_same_layers(depth: int) -> None:
    """With option A shortcuts a plain net has exactly the layers (names, shapes) and parameter
    count of its residual twin, so any difference in training is due to the shortcuts alone."""
    resnet, plain = build(f"resnet{depth}", 3, 32), build(f"plain{depth}", 3, 32)
    assert plain.num_params() == resnet.num_params()
    shapes = {k: v.shape for k, v in resnet.state_dict().items()}
    assert {k: v.shape for k, v in plain.state_dict().items()} == shapes


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_plain_net_has_no_shortcut(shortcut: str) -> None:
    """Zero every conv after the stem (the first conv): every residual branch then outputs 0.
    A ResNet still carries the input to its features through the shortcuts; a plain net has no
    other path, so its features are the same constant for every input."""
    x = torch.rand(4, 3, 32, 32)
    features = {}
    for name in ("resnet20", "plain20"):
        model = build(name, 3, 32, shortcut=shortcut).eval()
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv in convs[1:]:
                if conv.kernel_size == (3, 3):  # residual branch, not a projection shortcut
                    conv.weight.zero_()
        features[name] = model.forward_features(x)
    assert features["resnet20"].abs().sum() > 0
    assert not torch.allclose(features["resnet20"][0], features["resnet20"][1])
    assert torch.allclose(features["plain20"], features["plain20"][:1].expand(4, -1))


def test_preact_block_is_the_formula() -> None:
    """A pre-activation block is x + conv2(relu(bn2(conv1(relu(bn1(x)))))) (He et al. 2016b,
    Fig. 4e), composed here from the block's own layers through torch.nn.functional."""
    model = build("preresnet20", 3, 32).train()
    block = model.stages[0][1]
    x = torch.randn(4, 16, 8, 8)

    def bn(layer: nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(t, None, None, layer.weight, layer.bias, True)

    branch = block.conv2(torch.relu(bn(block.bn2, block.conv1(torch.relu(bn(block.bn1, x))))))
    torch.testing.assert_close(block(x), x + branch)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_plain_net_is_the_same_chain_with_either_block(batchnorm: bool) -> None:
    """Without shortcuts, pre- and post-activation blocks group the same chain conv, bn, act,
    conv, bn, act, ... differently: a pre-activation plain net with the post-activation one's
    weights moved to the matching places (each BN goes with the conv before it) computes the
    same logits. So only the shortcuts tell preresnet from plain, as for resnet."""
    post = build("plain20", 1, 8, batchnorm=batchnorm, activation="sigmoid").train()
    pre = build("plain20", 1, 8, batchnorm=batchnorm, activation="sigmoid", preact=True).train()
    convs_post = [m for m in post.modules() if isinstance(m, nn.Conv2d)]
    convs_pre = [m for m in pre.modules() if isinstance(m, nn.Conv2d)]
    blocks_post = [b for stage in post.stages for b in stage]
    blocks_pre = [b for stage in pre.stages for b in stage]
    norms_post = [post.stem[1]] + [n for b in blocks_post for n in (b.bn1, b.bn2)]
    norms_pre = [n for b in blocks_pre for n in (b.bn1, b.bn2)] + [pre.post[0]]
    assert len(convs_pre) == len(convs_post) == 19 and len(norms_pre) == len(norms_post)
    with torch.no_grad():
        for dst, src in zip(convs_pre + norms_pre, convs_post + norms_post, strict=True):
            for name, p in dst.named_parameters():
                p.copy_(src.get_parameter(name))
        pre.head.load_state_dict(post.head.state_dict())
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(pre(x), post(x))


def test_option_b_adds_projections() -> None:
    """Option B adds a 1x1 conv + BN projection at each of the two width changes, and option A
    adds none: (16*32 + 2*32) + (32*64 + 2*64) = 2,752 extra parameters."""
    a, b = build("resnet20", 3, 32), build("resnet20", 3, 32, shortcut="B")
    assert b.num_params() - a.num_params() == 2_752


def test_normalize_is_the_formula_and_is_saved() -> None:
    """``Normalize`` is (x - mean) / std per channel, and mean/std are in the state_dict, so a
    loaded model normalises like the trained one."""
    mean, std = (0.5, 0.25, 0.0), (0.2, 0.5, 2.0)
    x = torch.rand(2, 3, 4, 4)
    expected = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], dim=1)
    torch.testing.assert_close(Normalize(mean, std)(x), expected)
    model = build("cnn", 3, 32, mean=mean, std=std)
    state = model.state_dict()
    assert torch.equal(state["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.equal(state["normalize.std"].flatten(), torch.tensor(std))


# ---- create_model and friends --------------------------------------------------------------


def test_list_models() -> None:
    """Wildcards select by name, sorted; every model of this issue is registered."""
    assert list_models("resnet*") == ["resnet20", "resnet32", "resnet56"]
    assert list_models("pre*") == ["preresnet20", "preresnet56"]
    assert list_models("plain*") == ["plain20", "plain32", "plain56"]
    assert {"mlp", "cnn"} <= set(list_models())


def test_overrides_are_coerced() -> None:
    """Lists become tuples and ints become floats, so configs from TOML or JSON just work."""
    config = create_model("mlp", hidden=[64, 32], dropout=0, mean=[0.5], std=[1]).config
    assert config.hidden == (64, 32) and config.dropout == 0.0
    assert config.mean == (0.5,) and config.std == (1.0,)
    assert isinstance(config.dropout, float) and isinstance(config.std[0], float)


def test_model_defaults() -> None:
    """``model_defaults`` lists every field with the registered defaults applied."""
    defaults = model_defaults("plain56")
    assert defaults["depth"] == 56 and defaults["residual"] is False
    assert defaults["widths"] == (16, 32, 64) and defaults["num_classes"] == 10


def one_line_error(match: str, name: str, **overrides) -> str:
    with pytest.raises(UserError, match=match) as info:
        create_model(name, **overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_is_one_line_naming_key_and_valid_keys() -> None:
    """A typo names the bad key, the model and the keys that would have worked."""
    message = one_line_error("deph", "resnet20", deph=32)
    assert "resnet20" in message and "depth" in message and "shortcut" in message


@pytest.mark.parametrize(
    "name,key,value,expected",
    [
        ("resnet20", "depth", "32", "int"),
        ("resnet20", "depth", 32.0, "int"),
        ("resnet20", "residual", 1, "bool"),
        ("cnn", "convs_per_stage", True, "int"),
        ("mlp", "dropout", "0.1", "float"),
        ("mlp", "activation", 3, "str"),
        ("mlp", "hidden", 512, r"tuple\[int, \.\.\.\]"),
        ("mlp", "hidden", [512, 1.5], r"tuple\[int, \.\.\.\]"),
        ("resnet20", "widths", (16, 32), r"tuple\[int, int, int\]"),
    ],
)
def test_wrong_type_is_one_line(name: str, key: str, value, expected: str) -> None:
    """A value of the wrong type names the key and the expected type."""
    one_line_error(f"{key} must be {expected}", name, **{key: value})


@pytest.mark.parametrize(
    "name,overrides,match",
    [
        ("resnet20", {"depth": 21}, "depth must be 6n"),
        ("resnet20", {"depth": 2}, "depth must be 6n"),
        ("resnet20", {"shortcut": "C"}, "shortcut='C' is not one of: A, B"),
        ("resnet20", {"widths": (64, 32, 16)}, "widths must not decrease"),
        ("resnet20", {"activation": "gelu"}, "activation='gelu'"),
        ("mlp", {"dropout": 1.0}, "dropout"),
        ("cnn", {"pool": "max"}, "pool='max'"),
        ("cnn", {"widths": ()}, "widths"),
        ("cnn", {"in_channels": 3, "mean": (0.1, 0.2)}, "mean and std"),
        ("mlp", {"std": (0.0,)}, "std values must be > 0"),
    ],
)
def test_invalid_value_is_one_line(name: str, overrides: dict, match: str) -> None:
    """An invalid value is a UserError that names the model and says what is allowed."""
    assert name in one_line_error(match, name, **overrides)


def test_unknown_model_is_user_error() -> None:
    """An unknown model name lists the registered ones."""
    with pytest.raises(UserError, match="resnet20"):
        create_model("resnet21")
