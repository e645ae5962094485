"""The demo's settings: what it generates and which training configurations it runs.

:class:`DemoSettings` is read from ``configs/demo/demo.yaml`` (which documents every key), plus
``configs/demo/quick.yaml`` for the reduced run of the tests, and ``key=value`` overrides, through
the same merge as the training configuration (:func:`havic.config.load_structured`). The
configuration files it names (``configs/...``) are the ones shipped in :data:`havic.config.CONFIG_DIR`
unless such a file exists relative to the working directory.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from havic.config import CONFIG_DIR, ConfigError, load_structured

__all__ = ["DEMO_CONFIG", "QUICK_CONFIG", "DemoError", "DemoSettings", "config_file", "load_settings"]

DEMO_CONFIG = CONFIG_DIR / "demo" / "demo.yaml"
QUICK_CONFIG = CONFIG_DIR / "demo" / "quick.yaml"


class DemoError(RuntimeError):
    """Bad settings, or a stage failed; the message names the key or the stage and what to look at."""


@dataclass
class DemoSettings:
    """What the demo generates and runs (``configs/demo/demo.yaml`` documents every key).

    Scoring (window hop, aggregation, batch size) is not set here: the demo scores with the
    ``infer:`` settings, as a plain ``havic infer`` run does.
    """

    seed: int = 0
    n_identities: int = 4
    duration_s: float = 6.4
    fps: float = 5.0
    frame_size: int = 96
    pretrain_videos: int = 80
    real_videos: int = 80
    fake_videos_per_category: int = 25
    split_fractions: list[float] = field(default_factory=lambda: [0.6, 0.1, 0.3])
    pretrain_split_fractions: list[float] = field(default_factory=lambda: [0.875, 0.125])
    workers: int = 2
    pretrain_config: str = "configs/demo/pretrain.yaml"
    finetune_config: str = "configs/demo/finetune.yaml"
    no_pretraining_config: str = "configs/ablations/no_pretraining.yaml"
    pretrain_overrides: list[str] = field(default_factory=list)
    finetune_overrides: list[str] = field(default_factory=list)
    detector_weights: str = "last"


def load_settings(files: Sequence[str | os.PathLike] = (DEMO_CONFIG,), overrides: Sequence[str] = ()) -> DemoSettings:
    """Demo settings from YAML files (merged in order, ``include:`` allowed) and ``key=value`` overrides.

    Raises:
        DemoError: an unknown or mistyped key (named, with the file or override it came from), or
            a value the demo cannot run with.
    """
    try:
        cfg = load_structured(DemoSettings, files, overrides)
    except ConfigError as err:
        raise DemoError(f"demo settings: {err}") from None
    settings: DemoSettings = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    if settings.n_identities < 3:
        raise DemoError(f"n_identities={settings.n_identities}: the fakes need at least 3 identities")
    if settings.detector_weights not in ("best", "last"):
        raise DemoError(f"detector_weights={settings.detector_weights!r}: expected 'best' or 'last'")
    for key in ("pretrain_videos", "real_videos", "fake_videos_per_category"):
        if getattr(settings, key) < 1:
            raise DemoError(f"{key}={getattr(settings, key)}: must be >= 1")
    return settings


def config_file(path: str | os.PathLike) -> Path:
    """A configuration file named in the settings.

    An absolute path, or one that exists relative to the working directory, is taken as given;
    ``configs/...`` otherwise names a file shipped in :data:`havic.config.CONFIG_DIR`, wherever
    the package is installed.
    """
    p = Path(path)
    if p.is_absolute() or p.exists() or p.parts[:1] != ("configs",):
        return p
    return CONFIG_DIR.joinpath(*p.parts[1:])
