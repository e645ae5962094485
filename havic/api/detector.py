"""A loaded detector that scores videos: :func:`load_detector` and :class:`Detector`.

The examples run as doctests (``tests/test_api.py``) in a folder holding a detector weights file
``detector.safetensors`` (the tiny configuration of ``configs/tiny.yaml``, Haar face detector) and
a 4.8 s talking-face video ``talking.mp4``:

>>> import havic
>>> det = havic.load_detector("detector.safetensors")
>>> det
Detector('detector.safetensors', variant=paper, device=cpu, windows 3.2 s every 0.4 s, mean)
>>> pred = det.score("talking.mp4")
>>> pred.error, pred.n_windows, pred.window_starts
(None, 5, [0.0, 0.4, 0.8, 1.2, 1.6])
>>> 0.0 < pred.score < 1.0 and len(pred.window_logits) == 5
True
>>> from havic.metrics import sigmoid
>>> abs(pred.score - sigmoid(sum(pred.window_logits) / 5)) < 1e-9   # sigmoid of the mean window logit
True
>>> [(p.path, p.error) for p in det.score_many(["talking.mp4", "missing.mp4"])]
[('talking.mp4', None), ('missing.mp4', 'not_found')]
>>> feats = det.features("talking.mp4")
>>> feats.names
['video.1', 'video.2', 'video.fusion', 'audio.1', 'audio.2', 'audio.fusion']
>>> tuple(feats.features["audio.fusion"].shape), tuple(feats.taps("video").shape)
((5, 32), (5, 2, 32))

Hub ids work wherever a path does: ``havic.load_detector("hf://ORG/REPO")`` reads
``model.safetensors`` of that repository through the Hugging Face cache
(:mod:`havic.checkpoints.hub`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from havic.api.features import PooledFeatureRecorder, WindowFeatures
from havic.checkpoints import load_detector as load_detector_model
from havic.data.face import FaceCropper
from havic.inference import VideoScorer, build_cropper, collect_inputs, infer_overrides, score_items
from havic.predictions import VideoPrediction

__all__ = ["Detector", "load_detector"]

VideoInput = str | os.PathLike


class Detector:
    """A HAVIC detector with its scoring settings, ready to score videos.

    Build it with :func:`load_detector`. The scoring settings (window hop, aggregation, batch
    size, length cap, precision, threshold) are the ``infer`` section of :attr:`config`.

    Args:
        model: a detector network (:class:`~havic.models.HavicDetector`).
        config: its resolved configuration.
        source: where the weights came from (shown by ``repr``).
        device: where the model runs (default: where its parameters are).
        cropper: the face detector and cropper (default: ``data.face`` of `config`).
    """

    def __init__(self, model: nn.Module, config: DictConfig, *, source: str = "",
                 device: str | torch.device | None = None, cropper: FaceCropper | None = None) -> None:
        self.source = source
        self.scorer = VideoScorer(model, config, cropper if cropper is not None else build_cropper(config),
                                  device=device)

    @property
    def model(self) -> nn.Module:
        """The network, in eval mode, prepared for ``infer.precision``."""
        return self.scorer.model

    @property
    def config(self) -> DictConfig:
        """The resolved configuration (model, data, ``infer``)."""
        return self.scorer.cfg

    @property
    def threshold(self) -> float:
        """Decision threshold on the score (``infer.threshold``): fake when ``score >= threshold``."""
        return float(self.config.infer.threshold)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"Detector({self.source!r}, variant={cfg.model.variant}, device={self.scorer.device}, "
                f"windows {cfg.data.clip_seconds:g} s every {cfg.infer.hop_s:g} s, {cfg.infer.aggregate})")

    def score(self, video: VideoInput, *, label: int | None = None) -> VideoPrediction:
        """Score one video file with sliding windows.

        Args:
            video: the file.
            label: its label (1 fake, 0 real) when known, copied into the prediction.

        Returns:
            The :class:`~havic.predictions.VideoPrediction`: ``score`` (fake probability, the
            sigmoid of the aggregated window logits), ``logit``, ``window_starts`` and
            ``window_logits``, ``flags``; on failure ``error`` (e.g. ``not_found``, ``no_face``)
            and no score. Nothing raises for a bad video.
        """
        return self.scorer.score(video, label=label)

    def score_many(self, videos: VideoInput | Iterable[VideoInput], *,
                   root: VideoInput | None = None) -> list[VideoPrediction]:
        """Score files, folders (every video inside, recursively) and manifest CSVs (with their labels).

        Args:
            videos: one such path or several.
            root: where the relative paths of a manifest start (default: the manifest's folder).

        Returns:
            One prediction per video, in input order; failed videos included, with their error.
        """
        inputs: Sequence[VideoInput] = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
        return list(score_items(self.scorer, collect_inputs(inputs, root)))

    def features(self, video: VideoInput) -> WindowFeatures:
        """The pooled features of every window of one video, from the same pass as its score.

        Returns:
            :class:`~havic.api.features.WindowFeatures`: name -> (W, D) tensors for each encoder
            tap and fused stream, the window starts and logits, and the prediction.
        """
        with PooledFeatureRecorder(self.model) as recorder:
            pred = self.scorer.score(video)
        features = recorder.features() if pred.error is None else {}
        return WindowFeatures(str(video), list(pred.window_starts), list(pred.window_logits), features, pred)


def load_detector(
    weights: VideoInput,
    *,
    device: str | torch.device = "cpu",
    official: bool | None = None,
    overrides: Sequence[str] = (),
    hop_s: float | None = None,
    aggregate: str | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    precision: str | None = None,
    threshold: float | None = None,
    allow_untrained_heads: bool = False,
) -> Detector:
    """Load a detector for scoring videos.

    Args:
        weights: a weights file or Lightning checkpoint of this project, an official HAVIC
            fine-tuned state dict, or a Hub id ``hf://ORG/REPO[@REVISION][/FILE]``.
        device: where the model runs ("cpu", "cuda", ...).
        official: True reads `weights` as an official HAVIC state dict, False never does, None
            recognises it by its keys.
        overrides: YAML files and ``key=value`` items merged over the stored configuration, e.g.
            ``["data.face.detector=haar"]``.
        hop_s, aggregate, batch_size, max_seconds, precision, threshold: the scoring settings
            (``infer.*``); None keeps the configuration's.
        allow_untrained_heads: score with a detector whose pools and heads were never trained
            (its rows are flagged ``untrained_heads``) instead of refusing it.

    Returns:
        The :class:`Detector`.

    Raises:
        havic.checkpoints.CheckpointError: the weights cannot be read or hold no detector; the
            message names the file.
        havic.config.ConfigError: an override is not a valid setting.
    """
    settings = infer_overrides(hop_s=hop_s, aggregate=aggregate, batch_size=batch_size, max_seconds=max_seconds,
                               precision=precision, threshold=threshold)
    model, cfg = load_detector_model(weights, device, official=official, config_overrides=[*overrides, *settings],
                                     allow_untrained_heads=allow_untrained_heads)
    source = str(weights) if isinstance(weights, str) else str(Path(weights))
    return Detector(model, cfg, source=source, device=device)
