"""Configuration: schema, documented defaults, variants, overrides and errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from havic.config import (
    CONFIG_DIR, VARIANT_SWITCHES, ConfigError, HavicConfig, from_container, load_config, model_config,
    save_config, to_container,
)


def _leaf_keys(node, prefix=""):
    keys = set()
    for k, v in node.items():
        path = f"{prefix}{k}"
        keys |= _leaf_keys(v, path + ".") if isinstance(v, dict) else {path}
    return keys


def test_defaults_file_documents_every_schema_key_and_nothing_else():
    schema = OmegaConf.to_container(OmegaConf.structured(HavicConfig))
    documented = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "defaults.yaml"))
    assert _leaf_keys(documented) == _leaf_keys(schema)
    assert documented == schema  # defaults.yaml holds the schema's values, nothing else


def test_paper_is_the_default_and_switches_are_resolved():
    cfg = load_config()
    assert cfg.model.variant == "paper"
    for section, switches in VARIANT_SWITCHES["paper"].items():
        for key, value in switches.items():
            assert OmegaConf.select(cfg, f"{section}.{key}") == value  # sections are dotted paths


def test_official_variant_file_sets_every_official_switch():
    cfg = load_config([CONFIG_DIR / "model" / "official.yaml"])
    assert cfg.model.audio_token_order == "mel" and cfg.loss.rec_tokens == "all"
    assert cfg.model.fusion_double_residual is True and cfg.model.fusion_self_attention is False


def test_explicit_switch_beats_the_variant_preset():
    cfg = load_config(overrides=["model.variant=official", "model.audio_token_order=time"])
    assert cfg.model.audio_token_order == "time"
    assert cfg.model.audio_cls_pos is False  # the rest still from the official preset


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match="model.dimm"):
        load_config(overrides=["model.dimm=3"])


def test_unknown_key_in_a_file_names_file_and_key(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text("loss:\n  temprature: 0.1\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml.*temprature"):
        load_config([f])


def test_wrong_type_and_wrong_choice_are_errors():
    with pytest.raises(ConfigError, match="model.depth"):
        load_config(overrides=["model.depth=twelve"])
    with pytest.raises(ConfigError, match="audio_token_order"):
        load_config(overrides=["model.audio_token_order=diagonal"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["model.depth"])


def test_includes_merge_first_then_the_including_file(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("model:\n  dim: 64\n  depth: 3\n")
    (tmp_path / "exp.yaml").write_text("include: [base.yaml]\nmodel:\n  depth: 5\n")
    cfg = load_config([tmp_path / "exp.yaml"])
    assert (cfg.model.dim, cfg.model.depth) == (64, 5)


def test_include_cycle_is_reported(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config([tmp_path / "a.yaml"])


def test_save_and_container_round_trip(tmp_path: Path):
    cfg = load_config([CONFIG_DIR / "tiny.yaml"], ["seed=7"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config([tmp_path / "run" / "config.yaml"])
    assert to_container(again) == to_container(cfg)
    assert to_container(from_container(to_container(cfg))) == to_container(cfg)
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_model_config_helper_resolves_a_variant():
    m = model_config(variant="official", dim=64)
    assert m.dim == 64 and m.audio_token_order == "mel"


def test_clip_frames_must_match_the_model():
    with pytest.raises(ConfigError, match="model.video.num_frames"):
        load_config(overrides=["data.fps=4"])
    assert load_config([CONFIG_DIR / "tiny.yaml"]).data.fps == 1.25


def test_a_file_that_is_not_yaml_is_refused_in_one_short_line(tmp_path):
    """A predictions CSV given where a configuration goes: one line naming the file, not its contents."""
    csv = tmp_path / "pred.csv"
    csv.write_text("path,label,score\n" + "".join(f"v{i}.mp4,1,0.{i}\n" for i in range(500)))
    with pytest.raises(ConfigError, match=r"pred\.csv: not a configuration file") as err:
        load_config([csv])
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_an_unknown_long_key_is_shortened_in_the_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("x" * 1000 + ": 1\n")
    with pytest.raises(ConfigError, match="bad.yaml") as err:
        load_config([bad])
    assert len(str(err.value)) < 400


def test_malformed_yaml_is_a_config_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model:\n  dim: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config([bad])
