"""Moving weights between stages and into runs: pretrainer -> detector, initial weights, export, inference.

* :func:`pretrain_to_detector` keeps the backbone of a pretrainer (both encoders and the fusion
  module) for a detector (docs/official-differences.md#fine-tuning-initialisation);
  :func:`detector_from_pretrainer` loads it into a fresh one.
* ``train.init_from``: :func:`read_init_weights` reads a weights file or Lightning checkpoint of
  this project, or any plain state dict in our parameter names; :func:`check_compatible` refuses
  weights trained with another network structure; :func:`init_weights` loads them strictly into
  the stage's network.
* :func:`export_checkpoint` turns a Lightning checkpoint into a weights file;
  :func:`load_detector` loads a detector for inference from any file that holds one.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from havic.checkpoints.files import (
    CheckpointError, StateDict, _listing, detector_heads, load_state_dict_file, read_weights, save_weights,
)
from havic.checkpoints.hub import resolve_weights
from havic.checkpoints.official import load_official, official_kind
from havic.checkpoints.strict import LoadReport, fresh_model, load_with_report

__all__ = [
    "BACKBONE_PREFIXES", "DETECTOR_HEAD_PATTERNS", "PRETRAIN_PREFIXES", "STRUCTURAL_KEYS", "check_compatible",
    "detector_from_pretrainer", "export_checkpoint", "init_weights", "load_detector", "pretrain_to_detector",
    "read_init_weights",
]

log = logging.getLogger(__name__)

# Detector tensors that a pretrainer does not have: the pooling, layer weights and heads.
DETECTOR_HEAD_PATTERNS = (
    "video_pools.*", "audio_pools.*", "video_layer_weights.*", "audio_layer_weights.*",
    "head.*", "audio_head.*", "video_head.*",
)
BACKBONE_PREFIXES = ("video_encoder.", "audio_encoder.", "fusion.")
PRETRAIN_PREFIXES = BACKBONE_PREFIXES + ("video_decoder.", "audio_decoder.", "audio_to_video.", "video_to_audio.")
# Model keys that change what a tensor means or how tokens are laid out: they must match the initial weights'.
STRUCTURAL_KEYS = ("audio", "video", "dim", "depth", "num_heads", "mlp_ratio", "fusion_heads", "num_segments", "taps",
                   "audio_token_order", "audio_cls_pos", "fusion_double_residual", "fusion_self_attention",
                   "audio_norm_eps")


# -- pretrainer -> detector ---------------------------------------------------------------------


def pretrain_to_detector(pretrain_sd: Mapping[str, Tensor]) -> StateDict:
    """The backbone part of a pretrainer state dict: both encoders and the fusion module.

    Decoders and semantic translators are dropped; the detector's pooling and heads are not in a
    pretrainer. Load the result with ``load_with_report(detector, sd,
    expected_missing=DETECTOR_HEAD_PATTERNS)``.

    Raises:
        CheckpointError: a key is not a pretrainer key, or the encoders are absent.
    """
    foreign = [k for k in pretrain_sd if not k.startswith(PRETRAIN_PREFIXES)]
    if foreign:
        raise CheckpointError(f"not a pretrainer state dict: unknown keys {_listing(foreign)}")
    out = {k: v for k, v in pretrain_sd.items() if k.startswith(BACKBONE_PREFIXES)}
    for prefix in ("video_encoder.", "audio_encoder."):
        if not any(k.startswith(prefix) for k in out):
            raise CheckpointError(f"pretrainer state dict has no {prefix}* tensors")
    return out


def detector_from_pretrainer(pretrain_sd: Mapping[str, Tensor], cfg: Any) -> tuple[nn.Module, LoadReport]:
    """A detector initialised from ``cfg.seed`` holding the backbone of a pretrainer state dict.

    Returns:
        (the detector, the :class:`LoadReport`: the pools, layer weights and heads are left at init).

    Raises:
        CheckpointError: as :func:`pretrain_to_detector`, or backbone tensors that do not fit ``cfg``.
    """
    model = fresh_model(cfg, "detector")
    report = load_with_report(model, pretrain_to_detector(pretrain_sd), expected_missing=DETECTOR_HEAD_PATTERNS)
    return model, report


# -- weights of a run ---------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def read_init_weights(path: str | os.PathLike) -> tuple[StateDict, DictConfig | None]:
    """Tensors of a weights file and, for this project's files, the configuration they were trained with."""
    try:
        weights = read_weights(path)
    except CheckpointError:  # not a havic file: a plain (e.g. converted) state dict
        return load_state_dict_file(path), None
    return weights.state_dict, weights.config


def check_compatible(source: Any, target: Any) -> None:
    """Raise if two ``model`` sections differ in a key that changes what the shared tensors mean.

    Strict loading catches shape differences; this catches the rest (e.g. the audio token order,
    which reorders tokens without changing any shape).
    """
    pairs = {k: (_plain(source[k]), _plain(target[k])) for k in STRUCTURAL_KEYS}
    diff = {k: (a, b) for k, (a, b) in pairs.items() if a != b}
    if diff:
        listing = ", ".join(f"model.{k}: weights {a!r}, run {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"the initial weights were trained with another network structure ({listing})")


def init_weights(model: nn.Module, state_dict: Mapping[str, Tensor], stage: str) -> LoadReport:
    """Load initial weights strictly into the pretrainer (``stage="pretrain"``) or detector (``"finetune"``).

    Pretraining needs every tensor. Fine-tuning needs every encoder and fusion tensor, ignores the
    pretraining-only modules and may leave the detector's pools and heads fresh.

    Raises:
        CheckpointError: listing every missing, unexpected or mis-shaped tensor.
    """
    if stage == "pretrain":
        return load_with_report(model, state_dict)
    if stage != "finetune":
        from havic.config import CHOICES

        raise ValueError(f"stage {stage!r}: expected one of {list(CHOICES['train.stage'])}")
    pretrain_only = [prefix for prefix in PRETRAIN_PREFIXES if prefix not in BACKBONE_PREFIXES]
    ignored = {f"{prefix}*": "pretraining-only module" for prefix in pretrain_only}
    return load_with_report(model, state_dict, expected_missing=DETECTOR_HEAD_PATTERNS, ignored=ignored)


def export_checkpoint(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Export the network weights and configuration of one of this project's Lightning checkpoints.

    A detector's heads are recorded as trained when the checkpoint is past its first step
    (:func:`havic.checkpoints.files.detector_heads`).
    """
    weights = read_weights(ckpt_path)
    heads = None
    if weights.kind == "detector":
        heads = "trained" if detector_heads(weights) == "trained" else "untrained"
    return save_weights(out_path, weights.state_dict, weights.config, weights.kind, heads=heads,
                        source=Path(ckpt_path).name, **weights.metadata)


# -- a detector for inference -------------------------------------------------------------------


def load_detector(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    official: bool | None = None,
    config_overrides: Sequence[str] = (),
    allow_untrained_heads: bool = False,
) -> tuple[nn.Module, DictConfig]:
    """Load a detector for inference, in eval mode on `device`.

    Accepted files: this project's weights files and Lightning checkpoints
    (:func:`havic.checkpoints.read_weights`; the configuration stored with them is used), or an
    official HAVIC fine-tuned (HAVIC_FT) state dict, recognised by its keys or forced with
    ``official=True``: it is converted (:func:`havic.checkpoints.convert_official_havic`) into
    the ``official`` variant built from the defaults (full size) plus `config_overrides`, and
    loaded strictly.

    Args:
        path: the weights file, or a Hub id ``hf://ORG/REPO[@REVISION][/FILE]``
            (:mod:`havic.checkpoints.hub`; read from the Hugging Face cache, downloaded if absent).
        device: where the model runs.
        official: True forces the official reading, False forbids it, None detects it.
        config_overrides: YAML files and ``key=value`` items merged over the stored configuration
            (or over the defaults for an official file), e.g. ``data.face.detector=haar``.
        allow_untrained_heads: load a detector whose pools and heads were never trained (a
            conversion from a pretrainer: its scores mean nothing) instead of refusing it. The model
            gets ``heads_trained = False``, and :class:`havic.inference.VideoScorer` flags every row
            ``untrained_heads``. Every loaded detector carries ``heads_trained``.

    Returns:
        (model, resolved configuration).

    Raises:
        havic.checkpoints.CheckpointError: naming the file: unreadable, a pretraining checkpoint
            (no detection heads), untrained or unrecorded heads (unless allowed), an official
            pretraining state dict, a havic file read as official, or tensors that do not fit.
    """
    from havic.config import load_config, merge_config, split_items
    from havic.models import build_model

    path = resolve_weights(path)  # an hf://ORG/REPO[/FILE] id becomes its file in the Hub cache
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    no_heads = "it has no detection heads; fine-tune it first (tools/train.py with train.stage=finetune)"
    not_ours: CheckpointError | None = None
    if official is not True:
        try:
            weights = read_weights(path)
        except CheckpointError as err:
            if official is False:
                raise
            not_ours = err
        else:
            if weights.kind != "detector":
                raise CheckpointError(f"{path}: a {weights.kind} checkpoint: {no_heads}")
            heads = detector_heads(weights)
            if heads != "trained" and not allow_untrained_heads:
                why = ("its detection heads were never trained (converted from a pretrainer), so its scores mean "
                       "nothing" if heads == "untrained" else "it does not record whether its detection heads were "
                       "trained (written before havic recorded it, and not exported from a fine-tuning run)")
                raise CheckpointError(f"{path}: {why}; fine-tune it (tools/train.py configs/finetune/...), or pass "
                                      "--allow-untrained-heads (allow_untrained_heads=True) to score with it anyway")
            cfg = merge_config(weights.config, *split_items(config_overrides))
            model = build_model(cfg.model, "detector")
            load_with_report(model, weights.state_dict)
            model.heads_trained = heads == "trained"
            if not model.heads_trained:
                log.warning("%s: scoring with detection heads that were never trained: every row is flagged "
                            "untrained_heads", path)
            return model.eval().to(device), cfg
    state_dict = load_state_dict_file(path)
    kind = official_kind(state_dict)
    if kind == "pretrain":
        raise CheckpointError(f"{path}: an official HAVIC pretraining (HAVIC_PT) state dict: {no_heads}")
    if kind is None and official is not True:
        raise CheckpointError(
            f"{path}: neither a havic weights file or checkpoint ({not_ours}) nor an official HAVIC fine-tuned "
            "state dict (no classifier.output_layer.weight and AudioVisualInteractionModule.* keys)")
    files, dotlist = split_items(config_overrides)
    cfg = load_config(files, ["model.variant=official", *dotlist])
    try:
        model, report, _ = load_official(state_dict, "detector", cfg)
    except CheckpointError as err:
        if official is True and _is_havic_file(path):
            raise CheckpointError(f"{path}: this is a havic weights file, not an official HAVIC state dict: "
                                  "drop --official (or official=True)") from None
        raise CheckpointError(f"{path}: {err}") from None
    log.info("%s: official HAVIC detector, %d tensors loaded, %d ignored", path, len(report.loaded),
             len(report.ignored))
    model.heads_trained = True  # a released fine-tuned detector
    return model.eval().to(device), cfg


def _is_havic_file(path: Path) -> bool:
    """Whether `path` is one of this project's weights files or checkpoints."""
    try:
        read_weights(path)
    except CheckpointError:
        return False
    return True
