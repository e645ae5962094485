"""The two variants: the value of every configuration switch in each, and the presets switches name.

A switch left at ``null`` in a configuration takes its variant's value from :data:`VARIANT_SWITCHES`
(:func:`havic.config.resolve_variant`); docs/official-differences.md#variant-switches says why
each value differs. ``official`` is the official code's structure and numerics (needed to load the
released weights), ``paper`` the method as the paper describes it with the official code's bugs
fixed.
"""
from __future__ import annotations

from typing import Any

from havic.data import audio as audio_frontend

# AudioSet statistics of the log-mel fbank that AudioMAE normalises with, as (x - mean) / (2 * std).
AUDIOSET_FBANK_MEAN = -4.2677393
AUDIOSET_FBANK_STD = 4.5689974

# data.audio.norm_preset -> (norm_mean, norm_std); the fbank is normalised as (x - mean) / std.
AUDIO_NORM_PRESETS: dict[str, tuple[float, float]] = {
    "official": (audio_frontend.FBANK_MEAN, audio_frontend.FBANK_STD),  # the official scripts' constants
    "audioset": (AUDIOSET_FBANK_MEAN, 2 * AUDIOSET_FBANK_STD),  # what AudioMAE was trained on
}

# Section (dotted path) -> switch -> value, per variant: one place for every difference between the
# official code and the paper (docs/official-differences.md#variant-switches).
VARIANT_SWITCHES: dict[str, dict[str, dict[str, Any]]] = {
    "official": {
        "model": {
            "audio_token_order": "mel",  # segments are mel bands: docs/official-differences.md#the-audio-segment-bug
            "audio_cls_pos": False,  # computed then overwritten in the official code
            "fusion_double_residual": True,  # X + (X + o + MLP): docs/official-differences.md#audio-visual-fusion
            "fusion_self_attention": False,  # computed and discarded officially: not built
            "video_drop_path": 0.1,  # hard-coded in the official Block3d
            "audio_drop_path": 0.0,
            "teacher_drop_path": True,  # targets in train mode: docs/official-differences.md#semantic-targets-and-loss
            "audio_norm_eps": 1e-5,  # PyTorch's default, also in the AudioMAE-initialised layers
            "init_audio_pos_from_upstream": False,  # AudioMAE's table dropped, the sin-cos init kept
            "init_audio_modality_zero": False,  # the modality token keeps its random init
        },
        "loss": {"rec_tokens": "all"},
        "data.audio": {"norm_preset": "official"},
    },
    "paper": {
        "model": {
            "audio_token_order": "time",  # each segment is one 0.4 s time span
            "audio_cls_pos": True,
            "fusion_double_residual": False,
            "fusion_self_attention": True,  # "cross-attention followed by a Transformer block"
            "video_drop_path": 0.1,
            "audio_drop_path": 0.0,
            "teacher_drop_path": False,  # deterministic targets
            # Initialised from AudioMAE (paper Sec. 5.1), the audio encoder computes what AudioMAE does:
            "audio_norm_eps": 1e-6,  # AudioMAE's LayerNorm epsilon
            "init_audio_pos_from_upstream": True,  # AudioMAE's position table, rows in our token order
            "init_audio_modality_zero": True,  # AudioMAE adds no modality token
        },
        "loss": {"rec_tokens": "masked"},  # Eq. 1
        "data.audio": {"norm_preset": "audioset"},  # AudioMAE's input statistics
    },
}


def fill_audio_norm(audio: Any, variant: str) -> None:
    """Fill ``norm_mean`` / ``norm_std`` of a ``data.audio`` section from its ``norm_preset``, in place.

    * a named preset sets both numbers; a number already set to another value contradicts it;
    * a null preset with neither number set takes the variant's preset;
    * a null preset with numbers set keeps them as given (the normalisation of a run made before
      the presets existed, or one's own); a number left unset comes from the variant's preset.

    Args:
        audio: the ``data.audio`` configuration node (``norm_preset``, ``norm_mean``, ``norm_std``).
        variant: the resolved ``model.variant``.

    Raises:
        ValueError: an unknown preset name, or a number that contradicts the named preset.
    """
    name = audio.norm_preset
    if name is not None and name not in AUDIO_NORM_PRESETS:
        raise ValueError(f"data.audio.norm_preset={name!r}: expected one of {list(AUDIO_NORM_PRESETS)} or null")
    default = VARIANT_SWITCHES[variant]["data.audio"]["norm_preset"]
    if name is None and audio.norm_mean is None and audio.norm_std is None:
        name = audio.norm_preset = default
    for key, value in zip(("norm_mean", "norm_std"), AUDIO_NORM_PRESETS[name or default]):
        if audio[key] is None:
            audio[key] = value
        elif name is not None and abs(audio[key] - value) > 1e-6 * abs(value):
            raise ValueError(f"data.audio.{key}={audio[key]} contradicts data.audio.norm_preset={name} ({value}); "
                             "set data.audio.norm_preset=null to use numbers of your own")
