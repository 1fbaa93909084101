"""Config resolution: defaults → preset → file → dotted overrides; errors name the key."""

from __future__ import annotations

import pytest

from rlhfkit.config import ConfigBase, ConfigError, describe, load_config, parse_override, to_yaml
from rlhfkit.engine import EngineConfig, OptimConfig


class _Model(ConfigBase):
    name_or_path: str = "tiny"
    """Where the model comes from."""
    layers: int = 2
    """Number of layers."""


class _Algo(ConfigBase):
    out_dir: str = "runs/x"
    """Run directory."""
    model: _Model = _Model()
    optim: OptimConfig = OptimConfig()
    engine: EngineConfig = EngineConfig()


def test_defaults_file_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  layers: 4\noptim:\n  lr: 0.001\n")
    cfg = load_config(
        _Algo, path, ["optim.lr=1e-5", "model.name_or_path=gpt2", "engine.log_with=[tensorboard]"]
    )
    assert cfg.model.layers == 4  # from the file
    assert cfg.optim.lr == 1e-5  # override beats file; "1e-5" (a YAML string) becomes a float
    assert cfg.model.name_or_path == "gpt2"
    assert cfg.engine.log_with == ["tensorboard"]
    assert cfg.optim.weight_decay == 0.0  # untouched default


def test_unknown_key_is_rejected_with_its_dotted_name(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_Algo, None, ["optim.learning_rate=1e-5"])
    msg = str(e.value)
    assert "optim.learning_rate" in msg and "unknown key" in msg and "lr" in msg
    assert "command line" in msg


def test_wrong_type_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  layers: many\n")
    with pytest.raises(ConfigError) as e:
        load_config(_Algo, path)
    assert "model.layers" in str(e.value) and str(path) in str(e.value) and "'many'" in str(e.value)


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  layers: 2\n bad indent: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_config(_Algo, path)


@pytest.mark.parametrize("text", ["optim.lr", "=3", "optim..lr=3"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(text)


def test_override_through_a_value_is_an_error():
    with pytest.raises(ConfigError, match=r"out_dir: .*valid string.*command line 'out_dir.x=1'"):
        load_config(_Algo, None, ["out_dir.x=1"])
    path_cfg = {"optim": {"lr": 0.1}}
    with pytest.raises(ConfigError, match="optim.lr is a value"):
        from rlhfkit.config import _set_dotted

        _set_dotted(path_cfg, ["optim", "lr", "x"], 1, "command line")


def test_unknown_preset_lists_known():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config(_Algo, preset="nope")


def test_yaml_round_trip_and_help_text():
    cfg = load_config(_Algo, None, ["model.layers=3"])
    import yaml

    again = _Algo.model_validate(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg
    rows = {key: help_ for key, _, help_ in describe(_Algo)}
    assert rows["model.layers"] == "Number of layers."
    assert rows["optim.lr"].startswith("Peak learning rate")
