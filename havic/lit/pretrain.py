"""Stage 1: masked reconstruction, segment contrast and cross-modal semantics.

See docs/official-differences.md#pretraining-forward and
docs/official-differences.md#pretraining-schedule.

``L = rec_weight * L_rec + contrastive_weight * L_cl + cross_weight * L_cross``
(:func:`havic.losses.pretraining_losses`). ``train.contrastive_group`` decides which clips the
contrastive loss compares:

* ``per_device`` (official): the clips of this device's batch, as under the official
  ``DataParallel`` (28 clips per replica, docs/official-differences.md#segment-contrastive-loss);
* ``global``: the segment features of all processes are gathered with gradients and the loss is
  computed on the concatenated batch, identical on every rank. The gather's backward sums the
  ranks' gradients, i.e. multiplies this rank's by the world size, and DDP's gradient averaging
  divides it again, so the parameter update equals the single-process one on the whole batch.

Validation draws its masks from a generator seeded per clip (``train.val_mask_seed`` and the
clip's dataset index), so every validation pass scores the same masks (docs/official-differences.md#masking).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from havic.config import CHOICES
from havic.lit.base import HavicModule, mixed_seed
from havic.losses import loss_options, pretraining_losses
from havic.models import PretrainOutput
from havic.models.masking import MaskIds

__all__ = ["CONTRASTIVE_GROUPS", "PretrainModule", "gather_segments", "pretraining_terms"]

CONTRASTIVE_GROUPS = CHOICES["train.contrastive_group"]  # validated when the configuration loads

Gather = Callable[[Tensor], Tensor]  # (B, ...) -> (world, B, ...), the same on every rank


def gather_segments(out: PretrainOutput, gather: Gather) -> PretrainOutput:
    """``out`` with its segment features replaced by those of all processes, (world * B, S, D)."""
    return dataclasses.replace(
        out,
        audio_segments=gather(out.audio_segments).flatten(0, 1),
        video_segments=gather(out.video_segments).flatten(0, 1),
    )


def pretraining_terms(out: PretrainOutput, options: dict[str, Any], gather: Gather | None = None) -> dict[str, Tensor]:
    """All loss terms and their weighted ``total``; the contrastive ones over all processes with ``gather``.

    Reconstruction and cross-modal terms stay per process (DDP averages them); only the
    contrastive comparison needs the other processes' clips.
    """
    if gather is not None:
        out = gather_segments(out, gather)
    return pretraining_losses(out, **options)


class PretrainModule(HavicModule):
    """LightningModule around :class:`havic.models.HavicPretrainer`.

    Args:
        cfg: the resolved configuration (or its plain-dict form).
    """

    model_kind = "pretrain"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        group = self.cfg.train.contrastive_group
        if group not in CONTRASTIVE_GROUPS:
            raise ValueError(f"train.contrastive_group={group!r}: expected one of {list(CONTRASTIVE_GROUPS)}")
        self.loss_options = loss_options(self.cfg.loss)

    def _gather(self, sync_grads: bool) -> Gather | None:
        if self.cfg.train.contrastive_group != "global" or self.trainer.world_size == 1:
            return None  # with one process all_gather adds no leading dimension: nothing to gather
        return lambda x: self.all_gather(x, sync_grads=sync_grads)

    def forward(self, video: Tensor, audio: Tensor, ids_keep: MaskIds | None = None) -> PretrainOutput:
        return self.model(video, audio, ids_keep=ids_keep)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self(batch["video"], batch["audio"])
        terms = pretraining_terms(out, self.loss_options, self._gather(sync_grads=True))
        b = self.batch_size(batch)
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "total"}, batch_size=b)
        return terms["total"]

    def validation_masks(self, batch: dict[str, Any]) -> MaskIds:
        """Masks seeded per clip: the same for a clip in every validation pass, batch and world size."""
        if "index" not in batch:
            raise KeyError("pretraining validation needs the clips' dataset 'index' in the batch (fixed masks)")
        device = batch["video"].device
        seed = int(self.cfg.train.val_mask_seed)
        parts = []
        for index in torch.as_tensor(batch["index"]).tolist():
            generator = torch.Generator(device=device).manual_seed(mixed_seed(seed, index))
            parts.append(self.model.draw_masks(1, device, generator))
        return MaskIds(video=torch.cat([p.video for p in parts]), audio=torch.cat([p.audio for p in parts]))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self(batch["video"], batch["audio"], ids_keep=self.validation_masks(batch))
        terms = pretraining_terms(out, self.loss_options, self._gather(sync_grads=False))
        b = self.batch_size(batch)
        self.log("val/loss", terms["total"], prog_bar=True, sync_dist=True, batch_size=b)
        self.log_dict({f"val/{k}": v for k, v in terms.items() if k != "total"}, sync_dist=True, batch_size=b)
        return terms["total"]

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, Any], num: int = 1) -> dict[str, Tensor]:
        """Inputs, masked inputs and final-layer reconstructions of the first ``num`` clips (CPU, float).

        Uses the fixed validation masks and eval mode; the module's mode is restored.

        Returns:
            ``video``, ``video_masked``, ``video_recon``: (n, 3, T, H, W); ``audio``,
            ``audio_masked``, ``audio_recon``: (n, T_a, F). Masked-out patches are NaN in the
            ``*_masked`` tensors.
        """
        sub = {k: v[:num] for k, v in batch.items() if k in ("video", "audio", "index")}
        was_training = self.training
        self.eval()
        try:
            out = self(sub["video"], sub["audio"], ids_keep=self.validation_masks(sub))
        finally:
            self.train(was_training)
        grids = {"video": self.model.video_grid, "audio": self.model.audio_grid}
        targets = {"video": out.video_target, "audio": out.audio_target}
        hidden = {"video": out.video_hidden, "audio": out.audio_hidden}
        preds = {"video": out.video_preds[-1], "audio": out.audio_preds[-1]}
        result = {}
        for name, grid in grids.items():
            masked = targets[name].float().masked_fill(hidden[name].unsqueeze(-1), float("nan"))
            result[name] = sub[name].detach().float().cpu()
            result[f"{name}_masked"] = grid.unpatchify(masked).cpu()
            result[f"{name}_recon"] = grid.unpatchify(preds[name].float()).cpu()
        return result
