"""Stage 2: the detector.

See docs/official-differences.md#detector and docs/official-differences.md#fine-tuning-schedule.

``L = BCE(overall) + audio_head_weight * BCE(audio) + video_head_weight * BCE(video)``
(:func:`havic.losses.detection_bce`; without ``model.aux_heads`` only the first term). The
pretrained modules (encoders, fusion) learn at ``train.lr``, the new ones (pools, layer weights,
heads) at ``train.lr * train.head_lr_scale``.

Validation scores the main head on the ``val`` split: ACC (threshold 0.5 on the probability), AP and
AUC over the clips of all ranks (gathered, padding duplicates of the distributed sampler removed
by dataset index). Model selection uses them (best AUC, ties by ACC; see
:class:`havic.lit.callbacks.BestCheckpoint`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from havic.lit.base import HavicModule
from havic.losses import detection_bce
from havic.metrics import binary_metrics
from havic.models import DetectorOutput

__all__ = ["FinetuneModule", "PRETRAINED_PREFIXES", "validation_metrics"]

PRETRAINED_PREFIXES = ("video_encoder", "audio_encoder", "fusion")


def validation_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ACC, AP and AUC of :func:`havic.metrics.binary_metrics` as loggable floats (NaN if undefined)."""
    m = binary_metrics(labels, probs, threshold)
    return {k: math.nan if m[k] is None else float(m[k]) for k in ("acc", "ap", "auc")}


class FinetuneModule(HavicModule):
    """LightningModule around :class:`havic.models.HavicDetector`.

    Args:
        cfg: the resolved configuration (or its plain-dict form).
    """

    model_kind = "detector"
    pretrained_prefixes = PRETRAINED_PREFIXES

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.head_weights = {"audio": float(self.cfg.loss.audio_head_weight),
                             "video": float(self.cfg.loss.video_head_weight)}
        self._val_outputs: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, video: Tensor, audio: Tensor | None) -> DetectorOutput:
        return self.model(video, audio)

    def _scores(self, batch: dict[str, Any]) -> tuple[DetectorOutput, dict[str, Tensor]]:
        has_audio = batch.get("has_audio")
        # A batch without any audio goes through the audio-less path (video head, paper D.2); clips
        # of a mixed batch that lack audio carry the loader's placeholder fbank.
        audio = None if has_audio is not None and not bool(torch.as_tensor(has_audio).any()) else batch["audio"]
        out = self(batch["video"], audio)
        labels = {"overall": batch["label"], "audio": batch["audio_label"], "video": batch["video_label"]}
        return out, detection_bce(out.logits(), labels, self.head_weights)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        _, terms = self._scores(batch)
        b = self.batch_size(batch)
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=b)
        self.log_dict({f"train/bce_{k}": v for k, v in terms.items() if k != "total"}, batch_size=b)
        return terms["total"]

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out, terms = self._scores(batch)
        b = self.batch_size(batch)
        self.log("val/loss", terms["total"], sync_dist=True, batch_size=b)
        index = torch.as_tensor(batch["index"], device=out.logit.device).long().flatten()
        self._val_outputs.append((index, torch.sigmoid(out.logit.float().flatten()).detach(),
                                  batch["label"].float().flatten().detach()))
        return terms["total"]

    def _gather_rows(self, x: Tensor) -> Tensor:
        """Concatenate (N_rank, ...) tensors of all ranks (sizes may differ); rank order."""
        world = self.trainer.world_size
        if world == 1:
            return x
        sizes = self.all_gather(torch.tensor([x.shape[0]], device=x.device)).flatten().tolist()
        pad = x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))
        gathered = self.all_gather(torch.cat([x, pad]))  # (world, max, ...)
        return torch.cat([gathered[r, :n] for r, n in enumerate(sizes)])

    def on_validation_epoch_end(self) -> None:
        if self._val_outputs:
            index, probs, labels = (torch.cat(parts) for parts in zip(*self._val_outputs))
        else:
            index = torch.zeros(0, dtype=torch.long, device=self.device)
            probs = labels = torch.zeros(0, device=self.device)
        self._val_outputs = []
        index, probs, labels = (self._gather_rows(t) for t in (index, probs, labels))
        # The distributed sampler pads ranks to equal length by repeating clips: keep one of each.
        _, first = np.unique(index.cpu().numpy(), return_index=True)
        if first.size == 0:
            return
        metrics = validation_metrics(probs.cpu().numpy()[first], labels.cpu().numpy()[first])
        # Identical on every rank (computed from the gathered scores), so syncing only averages equal values.
        self.log_dict({f"val/{k}": float(v) for k, v in metrics.items()}, sync_dist=True)
        self.log("val/num_clips", float(first.size), sync_dist=True)
