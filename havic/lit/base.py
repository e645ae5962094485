"""What the pretraining and fine-tuning LightningModules share.

* the network, built from ``cfg.model`` (optionally with activation checkpointing);
* AdamW with parameter groups and a :class:`~havic.lit.schedules.StepScheduler` stepped per
  optimizer step;
* per-step random state: the global RNGs are re-seeded from ``(seed, epoch, batch, rank)`` before
  every training batch (and epoch), so masks, drop-path and dropout of a step do not depend on
  what ran before it. A run resumed from a checkpoint therefore repeats the uninterrupted run's
  trajectory exactly (given an epoch-seeded sampler), and validation or previews in between
  change nothing;
* the resolved configuration in every checkpoint (``checkpoint["havic_config"]``).
"""
from __future__ import annotations

import functools
import logging
import math
import random
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from havic.checkpoints import CONFIG_KEY  # checkpoint entry holding to_container(cfg)
from havic.config import from_container, to_container
from havic.lit.schedules import StepScheduler, build_optimizer, param_groups, schedule_from_config
from havic.models import build_model

__all__ = ["CONFIG_KEY", "HavicModule", "enable_activation_checkpointing", "mixed_seed", "reseed"]

log = logging.getLogger(__name__)



def mixed_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (SeedSequence hashing, stable across platforms)."""
    state = np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) % 2**63


def reseed(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _checkpointed_forward(forward: Any, module: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
    if torch.is_grad_enabled() and module.training:
        return checkpoint(forward, module, *args, use_reentrant=False, **kwargs)
    return forward(module, *args, **kwargs)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute every encoder block in the backward pass instead of storing its activations.

    The blocks keep their parameter names (the forward is replaced per instance, no wrapper
    module), so checkpoints are unaffected; the RNG state is replayed, so drop-path masks match.

    Returns:
        The number of blocks wrapped.
    """
    n = 0
    for name in ("video_encoder", "audio_encoder"):
        encoder = getattr(model, name, None)
        if encoder is None:
            raise ValueError(f"activation checkpointing: the model has no {name}")
        for block in encoder.blocks:
            block.forward = functools.partial(_checkpointed_forward, type(block).forward, block)
            n += 1
    return n


class HavicModule(pl.LightningModule):
    """Base of :class:`~havic.lit.pretrain.PretrainModule` and :class:`~havic.lit.finetune.FinetuneModule`.

    Args:
        cfg: the resolved configuration, or its plain-dict form (:func:`havic.config.to_container`).
    """

    model_kind: ClassVar[str]
    pretrained_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: DictConfig | dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg if isinstance(cfg, DictConfig) else from_container(cfg)
        self.model = build_model(self.cfg.model, self.model_kind)
        if self.cfg.train.activation_checkpointing:
            n = enable_activation_checkpointing(self.model)
            log.info("activation checkpointing over %d encoder blocks", n)

    # -- random state --------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        reseed(mixed_seed(self.cfg.seed, self.current_epoch, 2**31 - 1, self.global_rank))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        reseed(mixed_seed(self.cfg.seed, self.current_epoch, batch_idx, self.global_rank))

    # -- optimisation --------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        trainer = self.trainer
        trainer.estimated_stepping_batches  # noqa: B018 (sets up the training loader, so its length is known)
        num_batches = trainer.num_training_batches
        if not math.isfinite(num_batches):
            raise ValueError("the training loader has no length; the schedules need a sized dataset")
        tc = self.cfg.train
        schedule = schedule_from_config(tc, int(num_batches), int(trainer.accumulate_grad_batches))
        groups = param_groups(
            self.model, lr=float(tc.lr), weight_decay=float(tc.weight_decay),
            pretrained_prefixes=self.pretrained_prefixes, new_lr_scale=float(tc.head_lr_scale),
            decay_all=bool(tc.decay_norm_and_bias),
        )
        optimizer = build_optimizer(groups, tc.betas)
        log.info("schedule %s over %d optimizer steps (%d per epoch); learning rates %s", schedule.kind,
                 schedule.total_steps, schedule.steps_per_epoch, {g["name"]: g["lr"] for g in groups})
        scheduler = StepScheduler(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # -- checkpoints ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = to_container(self.cfg)

    @staticmethod
    def batch_size(batch: dict[str, Any]) -> int:
        return int(batch["video"].shape[0])
