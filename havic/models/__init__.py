"""HAVIC networks. ``build_model(cfg.model, "pretrain" | "detector")`` is the entry point."""
from __future__ import annotations

from typing import Any

from torch import nn

from havic.models.havic import (
    MODEL_TYPES,
    DetectorOutput,
    HavicDetector,
    HavicPretrainer,
    PretrainOutput,
    count_parameters,
    parameter_report,
)


def build_model(model_cfg: Any, kind: str) -> nn.Module:
    """Build the pretrainer (``kind="pretrain"``) or the detector (``kind="detector"``).

    Args:
        model_cfg: the resolved ``model`` section (``load_config(...).model`` or
            :func:`havic.config.model_config`).
        kind: which network.
    """
    if kind not in MODEL_TYPES:
        raise ValueError(f"model kind {kind!r}: expected one of {sorted(MODEL_TYPES)}")
    if model_cfg.audio_token_order is None:
        raise ValueError("model config has unresolved variant switches; build it with havic.config.model_config")
    return MODEL_TYPES[kind](model_cfg)


__all__ = [
    "build_model", "HavicPretrainer", "HavicDetector", "PretrainOutput", "DetectorOutput",
    "count_parameters", "parameter_report",
]
