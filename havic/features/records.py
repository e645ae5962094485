"""Feature records shared by the extractors, the feature store and the analyses that read them.

A :class:`FeatureSequence` is one named per-frame (or per-segment) feature sequence of one video,
with its time axis: row ``t`` describes the span starting at ``start_s + t / rate_hz``. Extractors
produce them, the store writes and reads them, and probes, explanations and anomaly detectors
consume them without knowing which encoder made them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["FeatureSequence", "MODALITIES"]

MODALITIES = ("audio", "video", "audio-visual")


@dataclass
class FeatureSequence:
    """One video's feature sequence.

    Attributes:
        name: what the sequence is, e.g. ``"havic/video/12"``, ``"wav2vec2/last"``.
        values: (T, D) float32 features, one row per time step.
        rate_hz: time steps per second (25.0 per video frame, 2.5 per HAVIC segment, 12.5 VideoMAE).
        modality: one of :data:`MODALITIES`.
        start_s: time of row 0 in seconds.
        meta: extractor settings worth keeping with the values (JSON-serialisable).
    """

    name: str
    values: Tensor
    rate_hz: float
    modality: str
    start_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"{self.name}: values must be (T, D), got shape {tuple(self.values.shape)}")
        if self.rate_hz <= 0:
            raise ValueError(f"{self.name}: rate_hz must be positive, got {self.rate_hz}")
        if self.modality not in MODALITIES:
            raise ValueError(f"{self.name}: modality {self.modality!r} is not one of {MODALITIES}")
        self.values = self.values.detach().to(torch.float32)

    @property
    def length(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def times(self) -> Tensor:
        """(T,) start time in seconds of every row."""
        return self.start_s + torch.arange(self.length, dtype=torch.float64) / self.rate_hz
