"""Config loading: defaults < TOML < overrides, and one-line errors for every mistake."""

from __future__ import annotations

import pytest

from neuralab import config
from neuralab.errors import UserError


def test_precedence_defaults_toml_overrides(tmp_path):
    """A TOML value beats the default; a key=value override beats the TOML value."""
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nlr = 0.5\nname = "sgd"\n[train]\nepochs = 3\n')
    cfg = config.load(path, ["optim.lr=2e-3", "seed=7"])
    assert cfg.optim.lr == 2e-3 and cfg.optim.name == "sgd"  # override, then TOML
    assert cfg.train.epochs == 3 and cfg.seed == 7
    assert cfg.train.batch_size == config.TrainConfig().batch_size  # default


def test_overrides_are_coerced_by_field_type():
    """Strings from the command line become ints, floats, bools and tuples by the field type."""
    cfg = config.load(
        None,
        [
            "train.max_steps=50",
            "train.ema=0.99",
            "data.augment=false",
            "model.name=cnn",
            "model.widths=8,16",
            "data.translations=web, kjv",
        ],
    )
    assert cfg.train.max_steps == 50 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.ema == 0.99 and cfg.data.augment is False
    assert cfg.model.options["widths"] == (8, 16)
    assert cfg.data.translations == ("web", "kjv")  # words need no quotes
    assert config.load(None, ['data.translations=["kjv"]']).data.translations == ("kjv",)
    with pytest.raises(UserError, match="'data.translations' must be a list of strings, got '1'"):
        config.load(None, ["data.translations=1"])


def test_deep_overrides_merge_into_nested_tables():
    """``a.b.c=v`` nests at any depth and merges into a TOML file's tables key by key (the
    siblings stay); a key given both as a value and as a table is a one-line error."""
    nested = config.parse_overrides(["env.config.duration=20", "env.config.observation.type=X"])
    assert nested == {"env": {"config": {"duration": "20", "observation": {"type": "X"}}}}
    base = {"env": {"id": "e", "config": {"lanes": 3, "observation": {"type": "K", "n": 5}}}}
    assert config.merge(base, nested) == {
        "env": {
            "id": "e",
            "config": {"lanes": 3, "duration": "20", "observation": {"type": "X", "n": 5}},
        }
    }
    for both in (["a.b=1", "a.b.c=2"], ["a.b.c=2", "a.b=1"], ["a=1", "a.b=2"]):
        with pytest.raises(UserError, match="given both as a value and as a section"):
            config.parse_overrides(both)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("train.epochs=abc", "'train.epochs' must be an integer"),
        ("train.epochs=2.5", "'train.epochs' must be an integer"),
        ("optim.name=adam", "must be one of adamw, sgd"),
        ("model.depthh=3", "unknown config key 'model.depthh' for model 'cnn'"),
        ("model.name=resnet99", "unknown model 'resnet99'"),
        ("nosuchsection.x=1", "unknown config key 'nosuchsection'"),
        ("lr", "bad override 'lr'"),
    ],
)
def test_mistakes_are_one_line_user_errors(override, fragment):
    """Each mistake names the key and what is allowed, in one line."""
    with pytest.raises(UserError) as err:
        config.load(None, [override])
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError, match="valid keys: .*lr"):
        config.load(None, ["optim.learning_rate=1"])


def test_changing_model_drops_old_model_options(tmp_path):
    """Overriding model.name discards the preset's options of another model."""
    cfg = config.load("digits_cnn", ["model.name=resnet20"])
    assert cfg.model.name == "resnet20" and cfg.model.options == {}


@pytest.mark.parametrize("preset", ["digits_cnn", "fashion_cnn", "fashion_mlp", "fashion_resnet"])
def test_presets_round_trip_through_toml(preset, tmp_path):
    """The saved config.toml reads back to an equal config: `train runs/x/config.toml` repeats."""
    cfg = config.load(preset)
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml(cfg))
    assert config.load(path) == cfg


def test_missing_config_names_presets():
    with pytest.raises(UserError, match="preset: .*fashion_cnn"):
        config.load("nope.toml")


def test_bad_toml_is_a_user_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\nepochs=")
    with pytest.raises(UserError, match="not valid TOML"):
        config.load(path)
