"""``data.audio.norm_preset``: the fbank normalisation by name, filled into ``norm_mean`` / ``norm_std``."""
from __future__ import annotations

import pytest
import torch

from havic.config import CONFIG_DIR, ConfigError, from_container, load_config, merge_config, to_container
from havic.data.audio import AudioFeatures
from havic.data.cache import ClipCache, video_key
from havic.data.datasets import ClipDataset

from tiny_cache import VIDEOS, build_tiny_cache, raw_fbank, tiny_config

OFFICIAL = (-6.996, 3.1205)  # the official scripts' constants
AUDIOSET = (-4.2677393, 9.1379948)  # AudioMAE: mean -4.2677393, and twice the std 4.5689974


def numbers(cfg) -> tuple[float, float]:
    return cfg.data.audio.norm_mean, cfg.data.audio.norm_std


def test_each_variant_has_its_preset():
    paper, official = load_config(), load_config([CONFIG_DIR / "model" / "official.yaml"])
    assert paper.data.audio.norm_preset == "audioset" and numbers(paper) == pytest.approx(AUDIOSET, abs=1e-9)
    assert official.data.audio.norm_preset == "official" and numbers(official) == pytest.approx(OFFICIAL, abs=1e-9)
    switched = load_config(overrides=["data.audio.norm_preset=official"])
    assert numbers(switched) == pytest.approx(OFFICIAL, abs=1e-9) and switched.model.variant == "paper"


def test_numbers_without_a_preset_are_used_as_given():
    cfg = load_config(overrides=["data.audio.norm_mean=-5.0", "data.audio.norm_std=2.0"])
    assert cfg.data.audio.norm_preset is None and numbers(cfg) == (-5.0, 2.0)
    one = load_config(overrides=["model.variant=official", "data.audio.norm_mean=-5.0"])
    assert one.data.audio.norm_preset is None and numbers(one) == (-5.0, OFFICIAL[1])  # the other from the variant
    # A configuration stored before the presets existed holds the official numbers and no preset.
    old = to_container(load_config())
    old["data"]["audio"] = {k: v for k, v in old["data"]["audio"].items() if k != "norm_preset"}
    old["data"]["audio"].update(norm_mean=OFFICIAL[0], norm_std=OFFICIAL[1])
    assert numbers(from_container(old)) == OFFICIAL


def test_a_number_that_contradicts_the_preset_is_an_error():
    with pytest.raises(ConfigError, match=r"data\.audio\.norm_std=2\.0 contradicts data\.audio\.norm_preset=official "
                                          r"\(3\.1205\); set data\.audio\.norm_preset=null"):
        load_config(overrides=["data.audio.norm_preset=official", "data.audio.norm_std=2.0"])
    with pytest.raises(ConfigError, match=r"data\.audio\.norm_preset='imagenet': expected one of \['official', "
                                          r"'audioset'\] or null"):
        load_config(overrides=["data.audio.norm_preset=imagenet"])


def test_resolved_configuration_round_trips():
    cfg = load_config()
    assert to_container(from_container(to_container(cfg))) == to_container(cfg)
    assert to_container(merge_config(cfg, overrides=["infer.hop_s=0.8"]))["data"]["audio"] == to_container(cfg)[
        "data"]["audio"]
    # The stored numbers pin the stored preset: naming another one needs the numbers cleared too.
    with pytest.raises(ConfigError, match="contradicts data.audio.norm_preset=official"):
        merge_config(cfg, overrides=["data.audio.norm_preset=official"])
    again = merge_config(cfg, overrides=["data.audio.norm_preset=official", "data.audio.norm_mean=null",
                                         "data.audio.norm_std=null"])
    assert numbers(again) == pytest.approx(OFFICIAL, abs=1e-9)


def test_the_readers_get_the_resolved_numbers(tmp_path):
    cache = ClipCache(build_tiny_cache(tmp_path / "cache"))
    for preset, (mean, std) in (("official", OFFICIAL), ("audioset", AUDIOSET)):
        cfg = tiny_config(cache.root, f"data.audio.norm_preset={preset}", "data.audio.length_policy=pad_crop")
        features = AudioFeatures.from_config(cfg)
        assert (features.norm_mean, features.norm_std) == pytest.approx((mean, std), abs=1e-9)
        sample = ClipDataset.from_config(cfg, cache, cache.records("val"))[0]
        video = [video_key(v.path) for v in VIDEOS].index(sample["key"])
        raw = torch.from_numpy(raw_fbank(video, 0)).half().float()[: cfg.model.audio.num_frames]  # pad_crop: crop
        torch.testing.assert_close(sample["audio"], (raw - mean) / std, rtol=0, atol=1e-5)
