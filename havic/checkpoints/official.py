"""Official HAVIC (HAVIC_PT / HAVIC_FT) state dicts -> the ``official`` variant of our networks.

:func:`convert_official_havic` renames a released official state dict (key layout:
docs/official-differences.md#official-key-layout) into ours: every official tensor lands in exactly
one of our tensors or is returned as ignored with the reason. Our models store tokens without the
official leading singleton dimensions (a CLS table is (S, D), not (1, S, D); a mask token (D,), not
(1, 1, D)) and keep fixed sin-cos tables as non-persistent buffers, so those tables are not part of
our state dicts. The conversion compares every official fixed table with the one the configuration
gives (:func:`recomputed_fixed_tables`) and refuses a checkpoint whose tables differ, which tells a
checkpoint made with another token layout or sizes: its other tensors would be read in the wrong
order. :func:`load_official` does all of it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from havic.checkpoints.files import CheckpointError, StateDict, _listing
from havic.checkpoints.rules import (
    _FIXED, Rule, _count_indexed, _cross_modal, _drop_leading_ones, _first_reason, _first_rule, _hierarchical,
    _param_only, _qv_block, _reasons, _rules, _timm_block, _to,
)
from havic.checkpoints.strict import LoadReport, fresh_model, load_with_report

__all__ = [
    "OFFICIAL_FIXED_TABLES", "OFFICIAL_KINDS", "compare_fixed_tables", "convert_official_havic", "load_official",
    "official_kind", "recomputed_fixed_tables", "table_difference",
]

OFFICIAL_KINDS = ("pretrain", "detector")
# Max abs difference between a foreign fixed table and ours: foreign tables are built in float32,
# up to 1e-4 from the exact values ours round to (docs/official-differences.md#sin-cos-tables).
FIXED_TABLE_TOLERANCE = 1e-3

_AVIM = r"AudioVisualInteractionModule\."
_OFFICIAL_IGNORED_COMMON = [
    (r"visual_encoder\.pos_embedding\.emb", _FIXED),
    (r"visual_encoder\.cls_pos_embed", _FIXED),
    (r"audio_encoder\.cls_pos_embed",
     "computed then discarded by the official audio encoder: its CLS tokens carry no position (audio_cls_pos=false)"),
    (_AVIM + r"(audio_mask_token|audio_modality|audio_pos_embed|visual_mask_token|visual_pos_embedding\.emb)",
     "never used by the official interaction module (docs/official-differences.md#audio-visual-fusion)"),
    (_AVIM + r"blocks\.0\.self_attn_(video|audio)\..+",
     "dead self-attention block: computed and discarded by the official interaction module "
     "(docs/official-differences.md#audio-visual-fusion)"),
]
_OFFICIAL_IGNORED_PRETRAIN = [
    (r"visual_decoder\.pos_embedding\.emb", _FIXED),
    (r"audio_decoder\.decoder_pos_embed", _FIXED),
    (r"A2V\.audio_pos_embed", _FIXED),
    (r"V2A\.visual_pos_embedding\.emb", _FIXED),
]
# Official fixed tables -> our buffers holding the same values (see compare_fixed_tables).
OFFICIAL_FIXED_TABLES = {
    "visual_encoder.pos_embedding.emb": "video_encoder.pos_embed",
    "visual_encoder.cls_pos_embed": "video_encoder.cls_pos",
    "visual_decoder.pos_embedding.emb": "video_decoder.pos_embed",
    "audio_decoder.decoder_pos_embed": "audio_decoder.pos_embed",
    "A2V.audio_pos_embed": "audio_to_video.pos_embed",
    "V2A.visual_pos_embedding.emb": "video_to_audio.pos_embed",
}
# Our tensors stored without the official leading singleton dims -> their number of dims.
_TOKEN_NDIM = {
    "audio_encoder.pos_embed": 2, "audio_encoder.modality": 1, "audio_encoder.cls_tokens": 2,
    "video_encoder.cls_tokens": 2, "video_decoder.mask_token": 1, "audio_decoder.mask_token": 1,
    "audio_decoder.modality": 1, "audio_to_video.mask_token": 1, "audio_to_video.modality": 1,
    "video_to_audio.mask_token": 1,
}


def _official_rules(kind: str, sd: Mapping[str, Tensor]) -> list[Rule]:
    rules = _rules(
        (r"audio_encoder\.(pos_embed|modality|cls_tokens)", _to(r"audio_encoder.\1")),
        (r"audio_encoder\.patch_embed\.proj\.(?P<rest>.+)", _param_only("audio_encoder.patch_embed.")),
        (r"audio_encoder\.norm\.(?P<rest>.+)", _param_only("audio_encoder.norm.")),
        (r"audio_encoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"audio_encoder.blocks.\1.", _qv_block)),
        (r"visual_encoder\.cls_tokens", _to("video_encoder.cls_tokens")),
        (r"visual_encoder\.patch_embedding\.projection\.(?P<rest>.+)", _param_only("video_encoder.patch_embed.")),
        (r"visual_encoder\.norm\.(?P<rest>.+)", _param_only("video_encoder.norm.")),
        (r"visual_encoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_encoder.blocks.\1.", _qv_block)),
        # cross_attn_audio_to_video reads audio to update the *video* stream (query = video).
        (_AVIM + r"blocks\.0\.cross_attn_audio_to_video\.(?P<rest>.+)", _to("fusion.video_cross.", _cross_modal)),
        (_AVIM + r"blocks\.0\.cross_attn_video_to_audio\.(?P<rest>.+)", _to("fusion.audio_cross.", _cross_modal)),
        (_AVIM + r"norm_video_out\.(?P<rest>.+)", _param_only("fusion.video_norm.")),
        (_AVIM + r"norm_audio_out\.(?P<rest>.+)", _param_only("fusion.audio_norm.")),
    )
    if kind == "pretrain":
        nv = _count_indexed(sd, "visual_decoder.blocks.")
        na = _count_indexed(sd, "audio_decoder.blocks.")
        rules += _rules(
            (r"visual_decoder\.mask_token", _to("video_decoder.mask_token")),
            (r"visual_decoder\.norm\.(?P<rest>.+)", _param_only("video_decoder.norm.")),
            (r"visual_decoder\.enc_dec_proj\.weight", _to("video_decoder.embed.weight")),
            (r"visual_decoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_decoder.blocks.\1.", _qv_block)),
            # head_l predicts after decoder layer l (1-based); the unnumbered head after the last layer.
            (r"visual_decoder\.head_(\d+)\.(weight|bias)", lambda m: f"video_decoder.heads.{int(m[1]) - 1}.{m[2]}"),
            (r"visual_decoder\.head\.(weight|bias)", lambda m: f"video_decoder.heads.{nv - 1}.{m[1]}"),
            (r"visual_decoder\.HiA_(\d+)\.(?P<rest>.+)", _to(r"video_decoder.cross.\1.", _hierarchical)),
            (r"audio_decoder\.mask_token", _to("audio_decoder.mask_token")),
            (r"audio_decoder\.decoder_modality", _to("audio_decoder.modality")),
            (r"audio_decoder\.decoder_norm\.(?P<rest>.+)", _param_only("audio_decoder.norm.")),
            (r"audio_decoder\.decoder_embed\.weight", _to("audio_decoder.embed.weight")),
            (r"audio_decoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"audio_decoder.blocks.\1.", _qv_block)),
            (r"audio_decoder\.decoder_pred_(\d+)\.(weight|bias)",
             lambda m: f"audio_decoder.heads.{int(m[1]) - 1}.{m[2]}"),
            (r"audio_decoder\.decoder_pred\.(weight|bias)", lambda m: f"audio_decoder.heads.{na - 1}.{m[1]}"),
            (r"audio_decoder\.HiA_(\d+)\.(?P<rest>.+)", _to(r"audio_decoder.cross.\1.", _hierarchical)),
            (r"A2V\.audio_mask_token", _to("audio_to_video.mask_token")),
            (r"A2V\.audio_modality", _to("audio_to_video.modality")),
            (r"A2V\.TokenAligner\.output_layer\.(?P<rest>.+)", _param_only("audio_to_video.aligner.")),
            (r"A2V\.block\.(?P<rest>.+)", _to("audio_to_video.block.", _timm_block)),
            (r"A2V\.norm\.(?P<rest>.+)", _param_only("audio_to_video.norm.")),
            (r"V2A\.visual_mask_token", _to("video_to_audio.mask_token")),
            (r"V2A\.TokenAligner\.output_layer\.(?P<rest>.+)", _param_only("video_to_audio.aligner.")),
            (r"V2A\.block\.(?P<rest>.+)", _to("video_to_audio.block.", _timm_block)),
            (r"V2A\.norm\.(?P<rest>.+)", _param_only("video_to_audio.norm.")),
        )
    else:
        heads = {"classifier": "head", "classifier_audio": "audio_head", "classifier_visual": "video_head"}
        # FlexibleMLP: layers.i (Linear) + output_layer; our MLPHead is Sequential(Linear, Dropout, ReLU, ...).
        hidden = {name: _count_indexed(sd, f"{name}.layers.") for name in heads}
        rules += _rules(
            (r"(Audio|Visual)TokenReducer_(\d+|AVI)\.mlp\.([02])\.(weight|bias)",
             lambda m: f"{'audio' if m[1] == 'Audio' else 'video'}_pools."
                       f"{'fusion' if m[2] == 'AVI' else m[2]}.score.{m[3]}.{m[4]}"),
            (r"pool_a\.weights", _to("audio_layer_weights.logits")),
            (r"pool_v\.weights", _to("video_layer_weights.logits")),
            (r"(classifier|classifier_audio|classifier_visual)\.layers\.(\d+)\.(weight|bias)",
             lambda m: f"{heads[m[1]]}.layers.{3 * int(m[2])}.{m[3]}"),
            (r"(classifier|classifier_audio|classifier_visual)\.output_layer\.(weight|bias)",
             lambda m: f"{heads[m[1]]}.layers.{3 * hidden[m[1]]}.{m[2]}"),
        )
    return rules


_OTHER_KIND_HINT = {
    "pretrain": (re.compile(r"(classifier|pool_[av]|\w+TokenReducer_)"), "detector", "HAVIC_FT (fine-tuned)"),
    "detector": (re.compile(r"(visual_decoder|audio_decoder|A2V|V2A)\."), "pretrain", "HAVIC_PT (pretraining)"),
}


def table_difference(theirs: Tensor, ours: Tensor) -> float:
    """Max abs difference between a foreign fixed table (any leading singleton dims) and ours; inf if sizes differ."""
    if theirs.numel() != ours.numel():
        return math.inf
    return float((theirs.detach().float().cpu().reshape(ours.shape) - ours.float().cpu()).abs().max())


def recomputed_fixed_tables(model_cfg: Any) -> dict[str, Tensor]:
    """Official fixed table -> the (L, D) table our network of ``model_cfg`` holds in its place.

    The values of the buffers :data:`OFFICIAL_FIXED_TABLES` names, computed from the configuration
    alone (no network is built).
    """
    from havic.models.havic import model_grids
    from havic.models.pos_embed import sincos_1d

    video, audio = model_grids(model_cfg)
    d, dd = model_cfg.dim, model_cfg.decoder_dim
    return {
        "visual_encoder.pos_embedding.emb": video.position_table(d),
        "visual_encoder.cls_pos_embed": sincos_1d(torch.arange(model_cfg.num_segments), d),
        "visual_decoder.pos_embedding.emb": video.position_table(dd),
        "audio_decoder.decoder_pos_embed": audio.position_table(dd),
        "A2V.audio_pos_embed": audio.position_table(d),
        "V2A.visual_pos_embedding.emb": video.position_table(d),
    }


def _check_fixed_tables(
    sd: Mapping[str, Tensor], model_cfg: Any, ignored: dict[str, str], allow_mismatch: bool,
) -> None:
    """Compare the official fixed tables with ours; state each difference in its ``ignored`` reason."""
    tables = recomputed_fixed_tables(model_cfg)
    diffs = {k: table_difference(sd[k], tables[k]) for k in tables if k in sd}
    bad = {k: v for k, v in diffs.items() if not v <= FIXED_TABLE_TOLERANCE}
    if bad and not allow_mismatch:
        listing = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        raise CheckpointError(
            f"official fixed tables differ from ours (max abs difference: {listing}; tolerance "
            f"{FIXED_TABLE_TOLERANCE:g}): the checkpoint was made with another token layout or other sizes than "
            "this model configuration, so its other tensors would be read out of order (allow_table_mismatch=True "
            "converts it anyway, and the model then uses its own tables)")
    for key, diff in diffs.items():
        if key in bad:
            ignored[key] = (f"fixed sin-cos table that differs from the recomputed buffer by {diff:.3g}, accepted "
                            "with allow_table_mismatch: the model uses its own table")
        else:
            ignored[key] = f"{_FIXED} (equal within {diff:.1e})"


def convert_official_havic(
    sd: Mapping[str, Tensor], kind: str, model_cfg: Any, *, allow_table_mismatch: bool = False,
) -> tuple[StateDict, dict[str, str]]:
    """Rename a released official HAVIC state dict to the ``official`` variant of our networks.

    Every official tensor lands in exactly one of our tensors or is returned as ignored with the
    reason: the fixed sin-cos tables (recomputed as buffers), the audio encoder's never-applied
    CLS positional table, and the interaction module's dead self-attention blocks and unused
    tokens/tables. Tokens lose their leading singleton dims. The fixed tables are compared with
    the ones ``model_cfg`` gives (:func:`recomputed_fixed_tables`): tables that differ mean that
    the checkpoint's token layout or sizes are not the configuration's, and are refused.

    Args:
        sd: an official HAVIC_PT (``kind="pretrain"``, 676 tensors) or HAVIC_FT
            (``kind="detector"``, 456 tensors) state dict, unwrapped.
        kind: which official model it comes from.
        model_cfg: the resolved ``model`` section of the network it is for (``model.variant=official``).
        allow_table_mismatch: convert even when fixed tables differ from ours; the differences
            are stated in the ignored reasons, and the model computes with its own tables.

    Returns:
        (our state dict for ``build_model(model_cfg, kind)``, official key -> reason ignored).

    Raises:
        CheckpointError: an official key matches no rule, two keys map to one target, a token
            has an unexpected shape, or a fixed table differs from ours (unless allowed).
    """
    if kind not in OFFICIAL_KINDS:
        raise CheckpointError(f"official checkpoint kind {kind!r}: expected one of {list(OFFICIAL_KINDS)}")
    ignored_rules = _reasons(_OFFICIAL_IGNORED_COMMON)
    if kind == "pretrain":
        ignored_rules += _reasons(_OFFICIAL_IGNORED_PRETRAIN)
    rules = _official_rules(kind, sd)
    out: StateDict = {}
    source: dict[str, str] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        reason = _first_reason(key, ignored_rules)
        if reason is not None:
            ignored[key] = reason
            continue
        target = _first_rule(key, rules)
        if target is None:
            unknown.append(key)
            continue
        if target in out:
            raise CheckpointError(f"official keys {source[target]} and {key} both map to {target}")
        out[target] = _drop_leading_ones(value, _TOKEN_NDIM[target], key) if target in _TOKEN_NDIM else value
        source[target] = key
    if unknown:
        pattern, other, name = _OTHER_KIND_HINT[kind]
        hint = f" (this looks like an official {name} state dict: use kind={other!r})" if any(
            pattern.match(k) for k in unknown) else ""
        raise CheckpointError(
            f"{len(unknown)} official keys match no rule for kind={kind!r}{hint}: {_listing(unknown)}")
    _check_fixed_tables(sd, model_cfg, ignored, allow_table_mismatch)
    return out, ignored


def compare_fixed_tables(official_sd: Mapping[str, Tensor], model: nn.Module) -> dict[str, float]:
    """Max abs difference between the official fixed sin-cos tables and our recomputed buffers.

    A large difference means the checkpoint was made with another token layout than ``model``.

    Args:
        official_sd: an official HAVIC state dict.
        model: our network built with the official variant.

    Returns:
        Official key -> max abs difference, for every table present in both.
    """
    buffers = dict(model.named_buffers())
    return {key: table_difference(official_sd[key], buffers[ours])
            for key, ours in OFFICIAL_FIXED_TABLES.items() if key in official_sd and ours in buffers}


def load_official(
    official_sd: Mapping[str, Tensor], kind: str, cfg: Any, *, allow_table_mismatch: bool = False,
) -> tuple[nn.Module, LoadReport, dict[str, float]]:
    """Our network of `kind` holding a converted official state dict, checked against its fixed tables.

    Args:
        official_sd: an official HAVIC_PT / HAVIC_FT state dict, unwrapped.
        kind: which official model it comes from ("pretrain" or "detector").
        cfg: the configuration to build from, with ``model.variant=official`` and the official
            sizes (the defaults).
        allow_table_mismatch: as in :func:`convert_official_havic`.

    Returns:
        (the network, the :class:`LoadReport` with the official keys left out under ``ignored``,
        official fixed table -> max abs difference to our buffer).

    Raises:
        CheckpointError: a key :func:`convert_official_havic` cannot place, tensors that do not
            fit the configuration's sizes, or fixed tables that differ from ours (another token
            layout or sizes) unless allowed.
    """
    converted, ignored = convert_official_havic(official_sd, kind, cfg.model, allow_table_mismatch=allow_table_mismatch)
    model = fresh_model(cfg, kind)
    try:
        report = load_with_report(model, converted)
    except CheckpointError as err:
        raise CheckpointError(f"official {kind} state dict does not fit the official variant of this configuration "
                              f"(check its model sizes): {err}") from None
    report.ignored.update(ignored)
    return model, report, compare_fixed_tables(official_sd, model)


def official_kind(state_dict: Mapping[str, Any]) -> str | None:
    """"detector" / "pretrain" for an official HAVIC_FT / HAVIC_PT state dict (by its keys), else None."""
    if not any(k.startswith("AudioVisualInteractionModule.") for k in state_dict):
        return None
    if "classifier.output_layer.weight" in state_dict:
        return "detector"
    if any(k.startswith(("visual_decoder.", "audio_decoder.", "A2V.", "V2A.")) for k in state_dict):
        return "pretrain"
    return None
