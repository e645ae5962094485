"""Configuration: a typed schema, YAML files that hold differences, and `key=value` overrides.

Merge order: schema defaults < `configs/defaults.yaml` < experiment files < CLI dotlist.
An unknown or mistyped key is an error that names it. Variant switches left at ``null`` are
filled from the variant's preset (:data:`VARIANT_SWITCHES`) so that the resolved configuration
that is saved with every run and checkpoint holds concrete values only.

Experiment files may start with ``include: [other.yaml, ...]`` (paths relative to the file);
included files are merged first, in order, then the including file.
"""
from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from havic.data import audio as audio_frontend
from havic.utils.io import atomic_write_text
from havic.variants import VARIANT_SWITCHES, fill_audio_norm

# The configuration files ship inside the package (the top-level configs/ of a checkout links here),
# so an installed wheel reads the same defaults.yaml and experiment files.
CONFIG_DIR = Path(str(importlib.resources.files("havic") / "configs"))


@dataclass
class AudioInputConfig:
    """The audio input: a log-mel fbank image of ``num_frames`` x ``num_mel_bins``."""

    num_frames: int = 1024
    num_mel_bins: int = audio_frontend.NUM_MEL_BINS
    patch_size: int = 16


@dataclass
class VideoInputConfig:
    """The video input: ``num_frames`` RGB frames of ``image_size`` x ``image_size``."""

    num_frames: int = 16
    image_size: int = 224
    tubelet_size: int = 2
    patch_size: int = 16


@dataclass
class ModelConfig:
    """Sizes and switches of the HAVIC networks (pretrainer and detector).

    Switches set to ``None`` take the value of ``variant`` (see :data:`VARIANT_SWITCHES`).
    """

    variant: str = "paper"
    audio: AudioInputConfig = field(default_factory=AudioInputConfig)
    video: VideoInputConfig = field(default_factory=VideoInputConfig)
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_dim: int = 384
    decoder_heads: int = 6
    fusion_heads: int = 8
    semantic_heads: int = 12
    num_segments: int = 8
    taps: list[int] = field(default_factory=lambda: [3, 6, 9, 12])
    video_mask_ratio: float = 0.9
    audio_mask_ratio: float = 0.8125
    score_hidden: int = 128
    head_dropout: list[float] = field(default_factory=lambda: [0.1, 0.2])
    aggregation: str = "attention"
    aux_heads: bool = True
    # --- variant switches (None = from the variant preset) ---
    audio_token_order: Optional[str] = None
    audio_cls_pos: Optional[bool] = None
    fusion_double_residual: Optional[bool] = None
    fusion_self_attention: Optional[bool] = None
    video_drop_path: Optional[float] = None
    audio_drop_path: Optional[float] = None
    teacher_drop_path: Optional[bool] = None
    audio_norm_eps: Optional[float] = None
    init_audio_pos_from_upstream: Optional[bool] = None
    init_audio_modality_zero: Optional[bool] = None


@dataclass
class LossConfig:
    """Pretraining and fine-tuning loss weights and options."""

    rec_weight: float = 1.0
    contrastive_weight: float = 0.01
    cross_weight: float = 1.0
    temperature: float = 0.07
    soft_negatives: bool = True
    temporal_segments: bool = True
    rec_tokens: Optional[str] = None
    audio_head_weight: float = 1.0
    video_head_weight: float = 1.0


@dataclass
class FaceConfig:
    """Face detection and cropping (the same settings for training data and inference)."""

    detector: str = "retinaface"
    weights: Optional[str] = None
    device: str = "cpu"
    conf_threshold: float = 0.7
    margin: float = 1.3
    square: bool = False
    max_gap_s: float = 1.0
    batch_size: int = 16


@dataclass
class AudioFeatureConfig:
    """Kaldi fbank parameters; mel bins and frame count come from ``model.audio``.

    ``norm_preset`` names the normalisation and fills ``norm_mean`` / ``norm_std`` (:func:`resolve_variant`).
    """

    sample_rate: int = audio_frontend.SAMPLE_RATE
    frame_length_ms: float = audio_frontend.FRAME_LENGTH_MS
    frame_shift_ms: float = audio_frontend.FRAME_SHIFT_MS
    length_policy: str = "stretch"
    norm_preset: Optional[str] = None
    norm_mean: Optional[float] = None
    norm_std: Optional[float] = None


@dataclass
class VideoAugmentConfig:
    """Fine-tuning video augmentation (havic.data.transforms.VideoAugment); one draw per clip."""

    enabled: bool = True
    flip_p: float = 0.5
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.33])
    downup_p: float = 0.3
    downup_scale: list[float] = field(default_factory=lambda: [0.5, 0.9])
    jpeg_p: float = 0.3
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 95])
    blur_p: float = 0.2
    blur_kernel: int = 13
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    brightness: list[float] = field(default_factory=lambda: [0.8, 1.2])
    contrast: list[float] = field(default_factory=lambda: [0.8, 1.2])
    saturation: list[float] = field(default_factory=lambda: [0.8, 1.2])
    hue: list[float] = field(default_factory=lambda: [-0.1, 0.1])


@dataclass
class AudioAugmentConfig:
    """Fine-tuning fbank augmentation (havic.data.transforms.AudioAugment)."""

    enabled: bool = True
    freq_mask: int = 20
    time_mask: int = 100
    noise_p: float = 0.5
    noise_scale: float = 0.1
    fill: str = "fixed"


@dataclass
class AugmentationConfig:
    video: VideoAugmentConfig = field(default_factory=VideoAugmentConfig)
    audio: AudioAugmentConfig = field(default_factory=AudioAugmentConfig)


@dataclass
class DataConfig:
    """Clips, cache and loaders."""

    manifest: Optional[str] = None
    root: Optional[str] = None
    cache_dir: Optional[str] = None
    clip_seconds: float = 3.2
    fps: float = 5.0
    jpeg_quality: int = 95
    face: FaceConfig = field(default_factory=FaceConfig)
    audio: AudioFeatureConfig = field(default_factory=AudioFeatureConfig)
    batch_size: int = 32
    eval_batch_size: int = 64
    num_workers: int = 4
    augment: bool = True
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    sampler: str = "four_class"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` arguments (same names); ``strategy: auto`` picks DDP for several devices."""

    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    deterministic: bool = False
    gradient_clip_val: float = 1.0
    max_epochs: int = 200
    max_steps: int = -1
    val_check_interval: Any = 1.0
    check_val_every_n_epoch: int = 1
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True


@dataclass
class TrainConfig:
    """Training runs: stage, optimisation, schedules, initialisation, logging (``tools/train.py``)."""

    stage: str = "pretrain"
    name: Optional[str] = None
    run_dir: str = "runs"
    init_from: Optional[str] = None
    allow_scratch: bool = False
    resume: Optional[str] = None
    global_batch_size: Optional[int] = None
    lr: float = 1.5e-4
    head_lr_scale: float = 10.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    decay_norm_and_bias: bool = True
    schedule: str = "paper"
    warmup_epochs: float = 20.0
    start_lr_div: float = 25.0
    final_lr_div: float = 1.0e4
    beta1_min: float = 0.85
    restart_epochs: int = 10
    restart_mult: int = 1
    min_lr: float = 1.0e-9
    restart_interval: str = "epoch"
    contrastive_group: str = "per_device"
    val_mask_seed: int = 0
    activation_checkpointing: bool = False
    preview_every_n_steps: int = 1000
    preview_frames: int = 4
    wandb: bool = True
    wandb_project: str = "havic"
    export: bool = True
    synthetic_clips: int = 0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class InferConfig:
    """Whole-video scoring (``havic infer``, ``havic evaluate``, the Python API): defaults live here only."""

    hop_s: float = 0.4
    aggregate: str = "mean"
    batch_size: int = 8
    max_seconds: Optional[float] = None
    precision: str = "fp32"
    threshold: float = 0.5
    preset: str = "corrected"


@dataclass
class HavicConfig:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "model.variant": tuple(VARIANT_SWITCHES),
    "model.audio_token_order": ("time", "mel"),
    "model.aggregation": ("attention", "mean"),
    "loss.rec_tokens": ("masked", "all"),
    "data.face.detector": ("retinaface", "haar"),
    "data.audio.length_policy": ("stretch", "pad_crop"),
    "data.sampler": ("none", "four_class", "binary"),
    "data.augmentation.audio.fill": ("fixed", "official"),
    "train.stage": ("pretrain", "finetune"),
    "train.schedule": ("paper", "official", "warm_restarts", "constant"),
    "train.restart_interval": ("epoch", "step"),
    "train.contrastive_group": ("per_device", "global"),
    "infer.aggregate": ("mean", "max", "lse"),
    "infer.precision": ("fp32", "bf16", "fp16"),
    "infer.preset": ("corrected", "official"),
}


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def resolve_variant(cfg: DictConfig) -> DictConfig:
    """Fill every ``None`` variant switch from the preset of ``cfg.model.variant``, then the audio normalisation."""
    variant = cfg.model.variant
    if variant not in VARIANT_SWITCHES:
        raise ConfigError(f"model.variant={variant!r}: expected one of {sorted(VARIANT_SWITCHES)}")
    for section, switches in VARIANT_SWITCHES[variant].items():
        node = OmegaConf.select(cfg, section)
        for key, value in switches.items():
            if node[key] is None and f"{section}.{key}" != "data.audio.norm_preset":  # filled below
                node[key] = value
    try:
        fill_audio_norm(cfg.data.audio, variant)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


def _check_choices(cfg: DictConfig) -> None:
    """Enumerated values."""
    for dotted, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, dotted)
        if value is not None and value not in allowed:
            raise ConfigError(f"{dotted}={value!r}: expected one of {list(allowed)}")


def _check_consistency(cfg: DictConfig) -> None:
    """Values of different sections that must agree."""
    frames = cfg.data.clip_seconds * cfg.data.fps
    if abs(frames - cfg.model.video.num_frames) > 1e-6:
        raise ConfigError(
            f"data.clip_seconds * data.fps = {frames:g} frames, but model.video.num_frames = "
            f"{cfg.model.video.num_frames}; they must agree"
        )


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[DictConfig]:
    """Load ``path`` and, first, the files it includes (recursively)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: include cycle through {[str(p) for p in seen]}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix.lower() not in (".yaml", ".yml"):  # e.g. a predictions CSV given where a config goes
        raise ConfigError(f"{path}: not a configuration file (configurations are .yaml or .yml files)")
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_shorten(str(err))}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: top level must be a mapping")
    layers: list[DictConfig] = []
    includes = node.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    for inc in includes:
        layers += _load_yaml(path.parent / inc, seen + (path,))
    layers.append(node)
    return layers


def _shorten(text: str, limit: int = 120) -> str:
    """One error line stays one line: a key or message longer than `limit` is cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _merge(cfg: DictConfig, layer: DictConfig | ListConfig, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except (ConfigKeyError, ValidationError) as err:
        key = _shorten(getattr(err, "full_key", None) or "")
        reason = _shorten((err.msg.strip().splitlines() or [""])[0])  # OmegaConf appends full_key / type lines
        raise ConfigError(f"{origin}: invalid key or value {key!r}: {reason}") from None


def _layers(files: Sequence[str | os.PathLike]) -> list[tuple[str, DictConfig]]:
    """Every YAML layer of `files`, includes first, with the file each came from."""
    return [(str(f), layer) for f in files for layer in _load_yaml(Path(f))]


def _apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    for item in overrides:
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    return cfg


def _finish(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply ``key=value`` overrides, fill variant switches, validate, make read-only."""
    cfg = _apply_overrides(cfg, overrides)
    resolve_variant(cfg)
    _check_choices(cfg)
    _check_consistency(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def load_structured(schema: type, files: Sequence[str | os.PathLike] = (), overrides: Sequence[str] = ()) -> DictConfig:
    """Settings of any dataclass `schema` from YAML files (``include:`` allowed) and ``key=value`` items.

    The same merge as :func:`load_config` for schemas other than :class:`HavicConfig` (e.g. the
    demo's settings): unknown or mistyped keys are :class:`ConfigError` naming the key and file.
    """
    cfg = OmegaConf.structured(schema)
    for origin, layer in _layers(files):
        cfg = _merge(cfg, layer, origin)
    return _apply_overrides(cfg, overrides)


def load_config(
    files: Sequence[str | os.PathLike] = (),
    overrides: Sequence[str] = (),
    *,
    defaults: str | os.PathLike | None = CONFIG_DIR / "defaults.yaml",
) -> DictConfig:
    """Build the resolved configuration.

    Args:
        files: experiment YAML files, merged in order.
        overrides: ``key=value`` strings (OmegaConf dotlist syntax).
        defaults: the documented defaults file; ``None`` to use the schema alone.

    Returns:
        A structured, read-only ``DictConfig`` with every variant switch filled in.
    """
    cfg = OmegaConf.structured(HavicConfig)
    sources = _layers([defaults]) if defaults is not None and Path(defaults).is_file() else []
    for origin, layer in sources + _layers(files):
        cfg = _merge(cfg, layer, origin)
    return _finish(cfg, overrides)


def merge_config(
    cfg: DictConfig | dict[str, Any],
    files: Sequence[str | os.PathLike] = (),
    overrides: Sequence[str] = (),
) -> DictConfig:
    """A resolved configuration (e.g. one stored with weights) with YAML files and overrides on top.

    Files may ``include:`` others, exactly as in :func:`load_config`; the result is validated the
    same way. `cfg` itself is not modified.

    >>> base = load_config(overrides=["data.fps=5"])
    >>> merge_config(base, overrides=["infer.hop_s=0.8"]).infer.hop_s
    0.8
    """
    data = to_container(cfg) if isinstance(cfg, DictConfig) else cfg
    merged = _merge(OmegaConf.structured(HavicConfig), OmegaConf.create(data), "stored config")
    for origin, layer in _layers(files):
        merged = _merge(merged, layer, origin)
    return _finish(merged, overrides)


def split_items(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Command-line items as (YAML files, ``key=value`` overrides)."""
    return [i for i in items if "=" not in i], [i for i in items if "=" in i]


def model_config(cfg: DictConfig | ModelConfig | None = None, **overrides: Any) -> DictConfig:
    """A resolved model section, e.g. ``model_config(variant="official", dim=64)``.

    Convenience for code and tests that build networks without the full configuration.
    """
    base = OmegaConf.structured(HavicConfig)
    if cfg is not None:
        base.model = cfg
    base = _merge(base, OmegaConf.create({"model": overrides}), "model_config")
    resolve_variant(base)
    _check_choices(base)
    return base.model


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML atomically (temporary file, then rename)."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain nested dict (for checkpoints and loggers)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def from_container(data: dict[str, Any]) -> DictConfig:
    """Rebuild a validated config from :func:`to_container` output (e.g. read from a checkpoint)."""
    cfg = _merge(OmegaConf.structured(HavicConfig), OmegaConf.create(data), "stored config")
    resolve_variant(cfg)
    _check_choices(cfg)
    _check_consistency(cfg)
    return cfg
