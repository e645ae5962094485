"""Per-window features of a detector: what its pools make of each encoder tap and of the fused streams.

The detector pools the patch tokens of every encoder tap and of both fused streams into one
vector each (:class:`~havic.models.heads.TokenAttentionPool`, or the mean), mixes the taps with its
layer weights and classifies the concatenation. :class:`PooledFeatureRecorder` keeps those pooled
vectors while :class:`~havic.inference.VideoScorer` scores a video, so the features come from the
same windows, crops and fbanks as the score, in one pass. :class:`WindowFeatures` is the record
the analysis tools read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from havic.predictions import VideoPrediction

__all__ = ["MODALITIES", "PooledFeatureRecorder", "WindowFeatures"]

MODALITIES = ("video", "audio")


@dataclass
class WindowFeatures:
    """The pooled features of every scored window of one video, in window order.

    Attributes:
        path: the video, as passed.
        window_starts: (W,) start of each scored window in seconds (``prediction.window_starts``).
        window_logits: (W,) the detector's logit of each window.
        features: name -> (W, D) float32 on the CPU. ``"video.<tap>"`` / ``"audio.<tap>"``: the
            patch tokens of that encoder block, pooled as the detector pools them;
            ``"video.fusion"`` / ``"audio.fusion"``: the fused streams, pooled. A video scored
            without audio (flag ``no_audio``) has video features only; a failed one has none.
        prediction: the video's prediction from the same pass (score, flags, error).
    """

    path: str
    window_starts: list[float]
    window_logits: list[float]
    features: dict[str, Tensor] = field(default_factory=dict)
    prediction: VideoPrediction | None = None

    @property
    def names(self) -> list[str]:
        """The feature names, video first, taps in depth order, then the fused stream."""
        return list(self.features)

    def taps(self, modality: str) -> Tensor:
        """(W, L, D): the L encoder taps of `modality` ("video" or "audio") stacked in depth order.

        Raises:
            KeyError: the video has no features of that modality.
        """
        names = [n for n in self.features if n.startswith(f"{modality}.") and n != f"{modality}.fusion"]
        if not names:
            raise KeyError(f"{self.path}: no {modality} features (available: {self.names})")
        return torch.stack([self.features[n] for n in names], dim=1)


class PooledFeatureRecorder:
    """Context manager: forward hooks on a detector's pools that keep every pooled (B, D) output.

    Each pool is called once per window batch, so concatenating its outputs gives one row per
    scored window, in the order the scorer ran them.

    Args:
        model: a :class:`~havic.models.HavicDetector` (``video_pools`` and ``audio_pools``).

    Example::

        with PooledFeatureRecorder(scorer.model) as recorder:
            pred = scorer.score("video.mp4")
        features = recorder.features()   # {"video.3": (W, D), ...}
    """

    def __init__(self, model: nn.Module) -> None:
        self.pools: dict[str, nn.Module] = {}
        for modality in MODALITIES:
            pools = getattr(model, f"{modality}_pools", None)
            if not isinstance(pools, nn.ModuleDict):
                raise TypeError(f"{type(model).__name__} has no {modality}_pools: not a HAVIC detector")
            # Taps in depth order, then the fused stream (the order of the detector's features).
            keys = sorted((k for k in pools if k != "fusion"), key=int) + ["fusion"]
            self.pools.update({f"{modality}.{k}": pools[k] for k in keys if k in pools})
        self._parts: dict[str, list[Tensor]] = {}
        self._handles: list[Any] = []

    def _record(self, name: str, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self._parts.setdefault(name, []).append(output.detach().float().cpu())

    def __enter__(self) -> PooledFeatureRecorder:
        self._parts = {}
        self._handles = [pool.register_forward_hook(partial(self._record, name)) for name, pool in self.pools.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def features(self) -> dict[str, Tensor]:
        """Name -> (W, D) for every pool that ran, in :attr:`pools` order."""
        return {name: torch.cat(self._parts[name]) for name in self.pools if name in self._parts}
