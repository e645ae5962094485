"""Extractors by name: ``build_extractor("havic" | "wav2vec2" | "clip" | "videomae", weights, ...)``.

Adding an encoder is one module with an :class:`~havic.features.extractor.Extractor` subclass and
one line in :data:`EXTRACTORS`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from havic.features.extractor import Extractor
from havic.features.havic_encoder import HavicExtractor
from havic.features.hf import HF_EXTRACTORS

__all__ = ["EXTRACTORS", "build_extractor"]

EXTRACTORS: dict[str, type[Extractor]] = {"havic": HavicExtractor, **HF_EXTRACTORS}


def build_extractor(name: str, weights: str | os.PathLike, *, device: str | torch.device = "cpu",
                    precision: str = "fp32", batch_size: int = 8, config_overrides: Sequence[str] = (),
                    mode: str = "segments", hop_s: float | None = None, random_init: int | None = None) -> Extractor:
    """An extractor of family `name` over `weights` (a HAVIC weights file; a Hub id or folder otherwise).

    `config_overrides`, `mode` and `hop_s` are HAVIC's (:class:`~havic.features.havic_encoder.HavicExtractor`).
    `random_init` (a seed) gives the encoder's random-initialisation twin: the same architecture and
    preprocessing with fresh weights, the shortcut baseline of SSR-DFD.
    """
    if name not in EXTRACTORS:
        raise ValueError(f"extractor {name!r}: expected one of {sorted(EXTRACTORS)}")
    if name == "havic":
        return HavicExtractor(weights, config_overrides=config_overrides, mode=mode, hop_s=hop_s, device=device,
                              precision=precision, batch_size=batch_size, random_init=random_init)
    return HF_EXTRACTORS[name](weights, device=device, precision=precision, batch_size=batch_size,
                               random_init=random_init)
