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
from havic.checkpoints.official import FIXED_TABLE_TOLERANCE, table_difference
from havic.checkpoints.rules import (
    _FIXED, _drop_leading_ones, _first_reason, _first_rule, _param_only, _qv_block, _reasons, _rules, _to,
)
from havic.checkpoints.strict import LoadReport, fresh_model, load_with_report

__all__ = [
    "PRETRAIN_INIT_ONLY", "ConversionReport", "audio_input_notes", "convert_audiomae", "convert_audiomae_marlin",
    "convert_marlin", "init_pretrainer",
]

# Our pretrainer tensors that AudioMAE and MARLIN may leave at their fresh init (the audio positions
# and modality token are set only under model.init_audio_pos_from_upstream / init_audio_modality_zero).
PRETRAIN_INIT_ONLY = (
    "video_encoder.cls_tokens", "audio_encoder.cls_tokens", "audio_encoder.pos_embed", "audio_encoder.modality",
    "fusion.*", "video_decoder.cross.*", "audio_decoder.*", "audio_to_video.*", "video_to_audio.*",
)

AUDIOMAE_NORM_EPS = 1e-6  # LayerNorm epsilon of AudioMAE's ViT-B encoder (mae_vit_base_patch16)

_AUDIOMAE_SKIPPED = [
    (r"cls_token", "AudioMAE's global CLS token; this model has one CLS token per segment, kept at their init"),
    (r"mask_token|decoder_.+", "AudioMAE's decoder (512 wide, Swin-style windowed attention) has no counterpart: "
                               "the audio decoder here is a hierarchical decoder of model.decoder_dim and starts "
                               "from its init"),
]


@dataclass
class ConversionReport:
    """Where every upstream tensor went.

    Attributes:
        loaded: our key -> upstream source (``"audiomae:<key>"`` / ``"marlin:<key>"``, with a slice
            or, in parentheses, an operation where the tensor was cut, reordered or transposed), or
            how a value was set that no upstream tensor gives (``"zeros (...)"``).
        skipped: upstream source -> reason it was not used.
        notes: where the initialised network, by the configuration, does not compute what the
            upstream one did (LayerNorm epsilon, input normalisation, time scale).
    """

    loaded: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self, max_keys: int = 30) -> str:
        lines = [f"converted {len(self.loaded)} of our tensors; skipped {len(self.skipped)} upstream tensors"]
        lines += [f"  {target} <- {src}" for target, src in self.loaded.items() if "(" in src]
        by_reason: dict[str, list[str]] = {}
        for k, reason in self.skipped.items():
            by_reason.setdefault(reason, []).append(k)
        for reason, keys in by_reason.items():
            lines.append(f"  skipped ({reason}): {_listing(keys, max_keys)}")
        lines += [f"  note: {note}" for note in self.notes]
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
    """Our audio encoder from AudioMAE's ``patch_embed``, ``blocks``, ``norm`` and, by variant, ``pos_embed``.

    AudioMAE was trained on (time, mel) images; when ``model_cfg.audio_token_order == "mel"`` our
    patch embedding sees (mel, time) images, so the kernel's last two axes are swapped and every
    filter still sees the patch it was trained on. AudioMAE's fused ``qkv.bias`` is split into
    ``q_bias`` / ``v_bias`` and its key part dropped, which is exact (see the comment in the code).

    Two variant switches decide whether, with every segment-level addition set aside, the audio
    encoder computes what AudioMAE computes: ``model.init_audio_pos_from_upstream`` copies
    AudioMAE's position table (its patch rows, in our token order) into our learnable positions,
    and ``model.init_audio_modality_zero`` sets the modality token, which AudioMAE does not have,
    to zero. Otherwise both keep their fresh init (the official behaviour). The LayerNorm epsilon
    (``model.audio_norm_eps``) is a property of the network; a value other than AudioMAE's is
    stated in the report's notes.

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
        if key == "pos_embed":
            _audiomae_positions(conv, value, model_cfg, src)
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
    if model_cfg.init_audio_modality_zero:
        conv.put("audio_encoder.modality", torch.zeros(conv.shapes["audio_encoder.modality"]),
                 "zeros (AudioMAE adds no modality token; model.init_audio_modality_zero)")
    if model_cfg.audio_norm_eps != AUDIOMAE_NORM_EPS:
        conv.report.notes.append(
            f"model.audio_norm_eps={model_cfg.audio_norm_eps:g}: the AudioMAE-initialised LayerNorms use another "
            f"epsilon than AudioMAE's {AUDIOMAE_NORM_EPS:g}")
    return conv.result()


def _audiomae_positions(conv: _Conversion, table: Tensor, model_cfg: Any, src: str) -> None:
    """AudioMAE's ``pos_embed`` (1, 1 + L, D) -> our learnable audio positions, or its reason for being skipped.

    AudioMAE's row 0 belongs to its global CLS token and row 1 + k to patch k of its time-major
    (time, mel) grid, the grid of our ``audio_token_order=time``; the mel-major grid takes the same
    rows in its own order.
    """
    from havic.models.havic import model_grids

    if not model_cfg.init_audio_pos_from_upstream:
        conv.report.skipped[src] = (
            "AudioMAE's fixed 2-D sin-cos table (its CLS row and its time-major patch grid), not used under "
            "model.init_audio_pos_from_upstream=false: the learnable audio positions keep their interleaved "
            "sin-cos init")
        return
    grid = model_grids(model_cfg)[1]
    rows = _drop_leading_ones(table, 2, src)
    if rows.shape[0] != grid.num_tokens + 1:
        raise CheckpointError(
            f"{src}: {rows.shape[0]} positions, expected 1 + {grid.num_tokens} (a CLS row and the "
            f"{grid.time_patches} x {grid.mel_patches} patch grid of model.audio): AudioMAE was trained on another "
            "fbank size")
    theirs = grid.token_time() * grid.mel_patches + grid.token_mel()  # AudioMAE's row of each of our tokens
    how = " (rows reordered to the mel-major token order)" if grid.order == "mel" else ""
    conv.put("audio_encoder.pos_embed", rows[1:][theirs].contiguous(), f"{src}[1:]{how}")
    conv.report.skipped[f"{src}[0:1]"] = "the position of AudioMAE's global CLS token, which this model does not have"


def convert_marlin(marlin_sd: Mapping[str, Tensor], model_cfg: Any) -> tuple[StateDict, ConversionReport]:
    """Our video encoder and decoder from MARLIN.

    Video encoder <- MARLIN ``encoder.*`` (patch embedding, blocks, norm); video decoder <- MARLIN
    ``decoder.blocks``, ``decoder.norm``, ``decoder.mask_token``, ``enc_dec_proj`` and
    ``decoder.head`` copied into every decoder layer's head. MARLIN's fixed sin-cos tables must
    equal the ones our network recomputes (the same interleaved layout over the same tubelet
    grid); the encoder then computes what MARLIN's does, apart from the segment CLS tokens. Both
    take RGB clips in [0, 1], and MARLIN's head predicts the (c, t, y, x) patch values our
    reconstruction targets hold.

    Args:
        marlin_sd: MARLIN state dict (unwrapped).
        model_cfg: the resolved ``model`` section our pretrainer is built from.

    Returns:
        (our ``video_encoder.*`` / ``video_decoder.*`` tensors, the :class:`ConversionReport` of the
        ``marlin:*`` keys).

    Raises:
        CheckpointError: a MARLIN key matches no rule, a tensor does not fit our model, or a fixed
            table differs from ours (another tubelet grid).
    """
    from havic.models.havic import model_grids

    conv = _Conversion(model_cfg)
    video_grid = model_grids(model_cfg)[0]
    tables = {"encoder.pos_embedding.emb": video_grid.position_table(model_cfg.dim),
              "decoder.pos_embedding.emb": video_grid.position_table(model_cfg.decoder_dim)}
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
        if key in tables:
            diff = table_difference(value, tables[key])
            if not diff <= FIXED_TABLE_TOLERANCE:
                raise CheckpointError(f"{src}: differs from our recomputed table by {diff:.3g} (tolerance "
                                      f"{FIXED_TABLE_TOLERANCE:g}): MARLIN was trained on another tubelet grid")
            conv.report.skipped[src] = f"{_FIXED} (equal within {diff:.1e})"
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
                              {**audio_report.skipped, **video_report.skipped},
                              audio_report.notes + video_report.notes)
    return {**audio, **video}, report


def audio_input_notes(cfg: Any) -> list[str]:
    """How the configured audio input differs from the one AudioMAE was trained on (scale and time)."""
    from havic.variants import AUDIO_NORM_PRESETS

    audio, notes = cfg.data.audio, []
    mean, std = AUDIO_NORM_PRESETS["audioset"]
    if abs(audio.norm_mean - mean) > 1e-6 * abs(mean) or abs(audio.norm_std - std) > 1e-6 * std:
        notes.append(
            f"data.audio normalises the fbank as (x - {audio.norm_mean:g}) / {audio.norm_std:g}, AudioMAE as "
            f"(x - {mean:g}) / {std:g} (data.audio.norm_preset=audioset): the audio encoder sees its input at "
            f"{std / audio.norm_std:.2f}x AudioMAE's scale")
    span_s = cfg.model.audio.num_frames * audio.frame_shift_ms / 1000
    if audio.length_policy == "stretch" and abs(span_s - cfg.data.clip_seconds) > 1e-9:
        notes.append(
            f"data.audio.length_policy=stretch: a {cfg.data.clip_seconds:g} s clip fills the "
            f"{cfg.model.audio.num_frames} fbank frames that hold {span_s:g} s in AudioMAE, so the audio encoder "
            f"sees time compressed {span_s / cfg.data.clip_seconds:.2f}x (HAVIC's design)")
    return notes


def init_pretrainer(
    audiomae_sd: Mapping[str, Tensor], marlin_sd: Mapping[str, Tensor], cfg: Any,
) -> tuple[nn.Module, ConversionReport, LoadReport]:
    """A pretrainer initialised from ``cfg.seed`` holding the AudioMAE and MARLIN weights.

    Args:
        audiomae_sd: AudioMAE pretraining state dict (unwrapped).
        marlin_sd: MARLIN state dict (unwrapped).
        cfg: the resolved configuration (``model`` and ``seed`` are used; ``data`` for the
            report's notes on the audio input).

    Returns:
        (the pretrainer, where every upstream tensor went, what was loaded and left at init).

    Raises:
        CheckpointError: as :func:`convert_audiomae_marlin`, or a pretrainer tensor outside
            :data:`PRETRAIN_INIT_ONLY` that the upstream weights do not provide.
    """
    state_dict, conversion = convert_audiomae_marlin(audiomae_sd, marlin_sd, cfg.model)
    conversion.notes += audio_input_notes(cfg)
    model = fresh_model(cfg, "pretrain")
    return model, conversion, load_with_report(model, state_dict, expected_missing=PRETRAIN_INIT_ONLY)
