"""AudioMAE + MARLIN -> the initialisation of a pretrainer.

The intended mapping (docs/official-differences.md#audiomae-and-marlin-initialisation), without the
official script's bugs: the audio encoder comes from AudioMAE (:func:`convert_audiomae`), the video
encoder and decoder from MARLIN (:func:`convert_marlin`); :func:`convert_audiomae_marlin` combines
both and :func:`init_pretrainer` loads them into a freshly initialised pretrainer. Each converter
accounts for every upstream key in its :class:`ConversionReport`: the tensor it became, or the
reason it was skipped. The tensors neither can provide (:data:`PRETRAIN_INIT_ONLY`) keep their
fresh initialisation.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from havic.checkpoints.files import CheckpointError, StateDict, _listing
from havic.checkpoints.rules import (
    _FIXED, _drop_leading_ones, _first_reason, _first_rule, _param_only, _qv_block, _reasons, _rules, _to,
)
from havic.checkpoints.strict import LoadReport, fresh_model, load_with_report

__all__ = [
    "PRETRAIN_INIT_ONLY", "ConversionReport", "convert_audiomae", "convert_audiomae_marlin", "convert_marlin",
    "init_pretrainer",
]

# Our pretrainer tensors that neither AudioMAE nor MARLIN can provide: they keep their fresh init.
PRETRAIN_INIT_ONLY = (
    "video_encoder.cls_tokens", "audio_encoder.cls_tokens", "audio_encoder.pos_embed", "audio_encoder.modality",
    "fusion.*", "video_decoder.cross.*", "audio_decoder.*", "audio_to_video.*", "video_to_audio.*",
)

_AUDIOMAE_SKIPPED = [
    (r"cls_token", "AudioMAE's single global CLS token; this model has one CLS token per segment (kept at init)"),
    (r"pos_embed", "AudioMAE's 513 positions (CLS + 512 patches of its time-major grid): a different layout; "
                   "the learnable audio positions keep their 2-D sin-cos init"),
    (r"mask_token|decoder_.+", "AudioMAE's decoder (512 wide, windowed attention) has no counterpart; "
                               "the audio decoder here is 384 wide and starts from its init"),
]
_MARLIN_SKIPPED = [(r"(encoder|decoder)\.pos_embedding\.emb", _FIXED)]


@dataclass
class ConversionReport:
    """Where every upstream tensor went.

    Attributes:
        loaded: our key -> upstream source (``"audiomae:<key>"`` / ``"marlin:<key>"``, with a slice
            or an operation where the tensor was cut or transposed).
        skipped: upstream source -> reason it was not used.
    """

    loaded: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self, max_keys: int = 30) -> str:
        lines = [f"converted {len(self.loaded)} of our tensors; skipped {len(self.skipped)} upstream tensors"]
        by_reason: dict[str, list[str]] = {}
        for k, reason in self.skipped.items():
            by_reason.setdefault(reason, []).append(k)
        for reason, keys in by_reason.items():
            lines.append(f"  skipped ({reason}): {_listing(keys, max_keys)}")
        return "\n".join(lines)


def _model_cfg_json(model_cfg: Any) -> str:
    if isinstance(model_cfg, DictConfig):
        return json.dumps(OmegaConf.to_container(model_cfg, resolve=True), sort_keys=True)
    return json.dumps(model_cfg, sort_keys=True, default=str)


@functools.lru_cache(maxsize=8)
def _pretrainer_shapes(cfg_json: str) -> dict[str, tuple[int, ...]]:
    """Our pretrainer's state-dict shapes for a model config, from a parameter-free (meta) build."""
    from havic.config import model_config
    from havic.models import build_model

    cfg = model_config(**json.loads(cfg_json))
    with torch.device("meta"):
        model = build_model(cfg, "pretrain")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


class _Conversion:
    """The tensors converted so far, each checked against our pretrainer as it arrives, and its report."""

    def __init__(self, model_cfg: Any) -> None:
        self.shapes = _pretrainer_shapes(_model_cfg_json(model_cfg))
        self.out: StateDict = {}
        self.report = ConversionReport()
        self.unknown: list[str] = []

    def put(self, target: str, value: Tensor, src: str) -> None:
        if target not in self.shapes:
            raise CheckpointError(f"{src}: target {target} does not exist in the pretrainer (check model.depth / taps)")
        shape = self.shapes[target]
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{src} -> {target}: shape {list(value.shape)} does not fit {list(shape)}")
        if target in self.out:
            raise CheckpointError(f"{src}: {target} already set from {self.report.loaded[target]}")
        self.out[target] = value
        self.report.loaded[target] = src

    def result(self) -> tuple[StateDict, ConversionReport]:
        if self.unknown:
            raise CheckpointError(f"{len(self.unknown)} upstream keys match no rule: {_listing(self.unknown)}")
        return self.out, self.report


def convert_audiomae(audiomae_sd: Mapping[str, Tensor], model_cfg: Any) -> tuple[StateDict, ConversionReport]:
    """Our audio encoder from AudioMAE's ``patch_embed``, ``blocks`` and ``norm``.

    AudioMAE was trained on (time, mel) images; when ``model_cfg.audio_token_order == "mel"`` our
    patch embedding sees (mel, time) images, so the kernel's last two axes are swapped and every
    filter still sees the patch it was trained on. AudioMAE's fused ``qkv.bias`` is split into
    ``q_bias`` / ``v_bias`` and its key part dropped, which is exact (see the comment in the code).

    Args:
        audiomae_sd: AudioMAE pretraining state dict (unwrapped).
        model_cfg: the resolved ``model`` section our pretrainer is built from.

    Returns:
        (our ``audio_encoder.*`` tensors, the :class:`ConversionReport` of the ``audiomae:*`` keys).

    Raises:
        CheckpointError: an AudioMAE key matches no rule, or a tensor does not fit our model.
    """
    conv = _Conversion(model_cfg)
    skip = _reasons(_AUDIOMAE_SKIPPED)
    transpose = model_cfg.audio_token_order == "mel"
    rules = _rules(
        (r"patch_embed\.proj\.(?P<rest>.+)", _param_only("audio_encoder.patch_embed.")),
        (r"blocks\.(\d+)\.(?P<rest>.+)", _to(r"audio_encoder.blocks.\1.", _qv_block)),
        (r"norm\.(?P<rest>.+)", _param_only("audio_encoder.norm.")),
    )
    for key, value in audiomae_sd.items():
        src = f"audiomae:{key}"
        reason = _first_reason(key, skip)
        if reason is not None:
            conv.report.skipped[src] = reason
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.bias", key)
        if m:
            if value.ndim != 1 or value.numel() % 3:
                raise CheckpointError(f"{src}: expected a fused (3 * D,) bias, got shape {list(value.shape)}")
            # A key bias b_k adds q . b_k to every score of query q: the same constant across the
            # keys it is compared with, which the softmax removes. Dropping it is therefore exact;
            # our attention learns only the query and value biases (key bias fixed at zero).
            q_bias, _, v_bias = value.chunk(3)
            d = q_bias.numel()
            conv.put(f"audio_encoder.blocks.{m[1]}.attn.q_bias", q_bias, f"{src}[0:{d}]")
            conv.put(f"audio_encoder.blocks.{m[1]}.attn.v_bias", v_bias, f"{src}[{2 * d}:{3 * d}]")
            conv.report.skipped[f"{src}[{d}:{2 * d}]"] = (
                "key bias: a per-query constant added to every score, cancelled exactly by the softmax")
            continue
        target = _first_rule(key, rules)
        if target is None:
            conv.unknown.append(src)
        elif target == "audio_encoder.patch_embed.weight" and transpose:
            # AudioMAE's filters index (time, mel); the mel-major grid feeds (mel, time) patches.
            conv.put(target, value.transpose(-1, -2).contiguous(), f"{src} (time/mel axes swapped)")
        else:
            conv.put(target, value, src)
    return conv.result()


def convert_marlin(marlin_sd: Mapping[str, Tensor], model_cfg: Any) -> tuple[StateDict, ConversionReport]:
    """Our video encoder and decoder from MARLIN.

    Video encoder <- MARLIN ``encoder.*`` (patch embedding, blocks, norm); video decoder <- MARLIN
    ``decoder.blocks``, ``decoder.norm``, ``decoder.mask_token``, ``enc_dec_proj`` and
    ``decoder.head`` copied into every decoder layer's head.

    Args:
        marlin_sd: MARLIN state dict (unwrapped).
        model_cfg: the resolved ``model`` section our pretrainer is built from.

    Returns:
        (our ``video_encoder.*`` / ``video_decoder.*`` tensors, the :class:`ConversionReport` of the
        ``marlin:*`` keys).

    Raises:
        CheckpointError: a MARLIN key matches no rule, or a tensor does not fit our model.
    """
    conv = _Conversion(model_cfg)
    skip = _reasons(_MARLIN_SKIPPED)
    n_heads = sum(1 for k in conv.shapes if re.fullmatch(r"video_decoder\.heads\.\d+\.weight", k))
    rules = _rules(
        (r"encoder\.patch_embedding\.projection\.(?P<rest>.+)", _param_only("video_encoder.patch_embed.")),
        (r"encoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_encoder.blocks.\1.", _qv_block)),
        (r"encoder\.norm\.(?P<rest>.+)", _param_only("video_encoder.norm.")),
        (r"decoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_decoder.blocks.\1.", _qv_block)),
        (r"decoder\.norm\.(?P<rest>.+)", _param_only("video_decoder.norm.")),
        (r"enc_dec_proj\.weight", _to("video_decoder.embed.weight")),
        (r"decoder\.mask_token", _to("video_decoder.mask_token")),
    )
    for key, value in marlin_sd.items():
        src = f"marlin:{key}"
        reason = _first_reason(key, skip)
        if reason is not None:
            conv.report.skipped[src] = reason
            continue
        m = re.fullmatch(r"decoder\.head\.(weight|bias)", key)
        if m:
            # MARLIN has one prediction head; every hierarchical decoder layer starts from it.
            for i in range(n_heads):
                conv.put(f"video_decoder.heads.{i}.{m[1]}", value.clone(), src)
            continue
        target = _first_rule(key, rules)
        if target is None:
            conv.unknown.append(src)
        elif target == "video_decoder.mask_token":
            conv.put(target, _drop_leading_ones(value, 1, src), src)
        else:
            conv.put(target, value, src)
    return conv.result()


def convert_audiomae_marlin(
    audiomae_sd: Mapping[str, Tensor], marlin_sd: Mapping[str, Tensor], model_cfg: Any,
) -> tuple[StateDict, ConversionReport]:
    """Initial pretrainer weights from AudioMAE (audio encoder) and MARLIN (video encoder and decoder).

    The union of :func:`convert_audiomae` and :func:`convert_marlin`, which fill disjoint parts of
    the pretrainer.

    Args:
        audiomae_sd: AudioMAE pretraining state dict (unwrapped).
        marlin_sd: MARLIN state dict (unwrapped).
        model_cfg: the resolved ``model`` section our pretrainer is built from.

    Returns:
        (our tensors that received upstream weights, the :class:`ConversionReport`). Load with
        ``load_with_report(model, sd, expected_missing=PRETRAIN_INIT_ONLY)``.

    Raises:
        CheckpointError: an upstream key matches no rule, or a tensor does not fit our model.
    """
    audio, audio_report = convert_audiomae(audiomae_sd, model_cfg)
    video, video_report = convert_marlin(marlin_sd, model_cfg)
    report = ConversionReport({**audio_report.loaded, **video_report.loaded},
                              {**audio_report.skipped, **video_report.skipped})
    return {**audio, **video}, report


def init_pretrainer(
    audiomae_sd: Mapping[str, Tensor], marlin_sd: Mapping[str, Tensor], cfg: Any,
) -> tuple[nn.Module, ConversionReport, LoadReport]:
    """A pretrainer initialised from ``cfg.seed`` holding the AudioMAE and MARLIN weights.

    Args:
        audiomae_sd: AudioMAE pretraining state dict (unwrapped).
        marlin_sd: MARLIN state dict (unwrapped).
        cfg: the resolved configuration (``model`` and ``seed`` are used).

    Returns:
        (the pretrainer, where every upstream tensor went, what was loaded and left at init).

    Raises:
        CheckpointError: as :func:`convert_audiomae_marlin`, or a pretrainer tensor outside
            :data:`PRETRAIN_INIT_ONLY` that the upstream weights do not provide.
    """
    state_dict, conversion = convert_audiomae_marlin(audiomae_sd, marlin_sd, cfg.model)
    model = fresh_model(cfg, "pretrain")
    return model, conversion, load_with_report(model, state_dict, expected_missing=PRETRAIN_INIT_ONLY)
