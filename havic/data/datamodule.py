"""Train / validation / test loaders over the clip cache, for pretraining and fine-tuning.

* ``pretrain``: the clips of ``data.train_split`` shuffled, full batches only (the contrastive loss
  compares the clips of a batch), no augmentation, no labels needed; validation on ``data.val_split``.
* ``finetune``: the training clips drawn by ``data.sampler`` (class-balanced with replacement, or
  shuffled for ``none``) and augmented when ``data.augment``; validation and test loaders serve
  their splits in order, unaugmented, with ``data.eval_batch_size``.

Validation uses its own held-out split: an empty validation split is an error, never a silent
switch to the test split (the reference validates and selects models on its test split,
docs/official-differences.md#fakeavceleb-split-and-labels).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Sampler

from havic.data.cache import ClipCache, ClipRecord, settings_from_config
from havic.data.datasets import ClipDataset, seed_worker
from havic.data.sampling import build_sampler
from havic.data.transforms import AudioAugment, VideoAugment

__all__ = ["HavicDataModule", "augmentations_from_config"]

log = logging.getLogger(__name__)

Stage = Literal["pretrain", "finetune"]
STAGES = ("pretrain", "finetune")


def _kwargs(node: Any) -> dict[str, Any]:
    """A config node as constructor keyword arguments (lists become tuples)."""
    if node is None:
        return {}
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in plain.items()}


def augmentations_from_config(cfg: DictConfig) -> tuple[VideoAugment, AudioAugment]:
    """The fine-tuning augmentations of a full configuration.

    Reads ``data.augmentation.video`` and ``data.augmentation.audio`` when the configuration has
    them (keys = the dataclass fields), else the defaults of the reference; the audio normalisation
    constants come from ``data.audio``.
    """
    video = _kwargs(OmegaConf.select(cfg, "data.augmentation.video", default=None))
    audio = _kwargs(OmegaConf.select(cfg, "data.augmentation.audio", default=None))
    audio.setdefault("norm_mean", float(cfg.data.audio.norm_mean))
    audio.setdefault("norm_std", float(cfg.data.audio.norm_std))
    return VideoAugment(**video), AudioAugment(**audio)


class HavicDataModule(pl.LightningDataModule):
    """Loaders of one training stage over the clip cache ``cfg.data.cache_dir``.

    Args:
        cfg: the full configuration (``load_config`` output).
        stage: ``pretrain`` or ``finetune``.
        require_audio: leave out clips without audio (counted on each dataset's ``n_excluded``).

    Raises:
        ValueError: unknown stage, missing cache directory, cache settings that differ from the
            configuration, or a requested split without clips.
    """

    def __init__(self, cfg: DictConfig, stage: Stage, *, require_audio: bool = True) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage={stage!r}: expected one of {list(STAGES)}")
        if cfg.data.cache_dir is None:
            raise ValueError("data.cache_dir is not set: point it to a cache built by tools/preprocess.py")
        self.cfg = cfg
        self.stage = stage
        self.require_audio = require_audio
        self.cache: ClipCache | None = None
        self.datasets: dict[str, ClipDataset] = {}

    # -- construction -------------------------------------------------------------------------

    def _open_cache(self) -> ClipCache:
        if self.cache is None:
            cache = ClipCache(self.cfg.data.cache_dir)
            cache.check_settings(settings_from_config(self.cfg))
            self.cache = cache
        return self.cache

    def _split_records(self, role: str) -> list[ClipRecord]:
        name = self.cfg.data[f"{role}_split"]
        cache = self._open_cache()
        records = cache.records(name)
        if not records:
            available = Counter(r.split or "<none>" for r in cache.records())
            listing = ", ".join(f"{s!r}: {n}" for s, n in sorted(available.items())) or "none"
            raise ValueError(
                f"{cache.root}: the {role} split data.{role}_split={name!r} has no clips "
                f"(clips per split: {listing})"
            )
        return records

    def _dataset(self, role: str, augment: bool) -> ClipDataset:
        cfg = self.cfg
        video_augment = audio_augment = None
        if augment:
            video_augment, audio_augment = augmentations_from_config(cfg)
            video_augment = video_augment if video_augment.enabled else None
            audio_augment = audio_augment if audio_augment.enabled else None
        dataset = ClipDataset.from_config(cfg, self._open_cache(), self._split_records(role),
                                          video_augment=video_augment, audio_augment=audio_augment,
                                          require_audio=self.require_audio)
        if len(dataset) == 0:
            raise ValueError(
                f"{dataset.cache.root}: the {role} split {cfg.data[f'{role}_split']!r} has no usable clips "
                f"(excluded: {dict(dataset.n_excluded)})"
            )
        log.info("%s %s split: %d clips", self.stage, role, len(dataset))
        return dataset

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a Lightning stage needs (``fit``, ``validate``, ``test``)."""
        if stage in (None, "fit") and "train" not in self.datasets:
            augment = self.stage == "finetune" and bool(self.cfg.data.augment)
            self.datasets["train"] = self._dataset("train", augment=augment)
        if stage in (None, "fit", "validate") and "val" not in self.datasets:
            self.datasets["val"] = self._dataset("val", augment=False)
        if stage in (None, "test") and "test" not in self.datasets:
            self.datasets["test"] = self._dataset("test", augment=False)

    # -- loaders ------------------------------------------------------------------------------

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def train_sampler(self) -> Sampler | None:
        """The fine-tuning sampler of ``data.sampler`` (distributed when the world is > 1), or None."""
        if self.stage != "finetune":
            return None
        world, rank = self._world()
        return build_sampler(
            self._require("train").records, self.cfg.data.sampler, seed=int(self.cfg.seed),
            num_replicas=world, rank=rank,
        )

    def _require(self, role: str) -> ClipDataset:
        if role not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[role])
        return self.datasets[role]

    def _loader(self, dataset: ClipDataset, batch_size: int, **kwargs: Any) -> DataLoader:
        workers = int(self.cfg.data.num_workers)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=seed_worker,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._require("train")
        sampler = self.train_sampler()
        return self._loader(
            dataset,
            int(self.cfg.data.batch_size),
            sampler=sampler,
            shuffle=sampler is None,
            drop_last=self.stage == "pretrain",
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require("val"), int(self.cfg.data.eval_batch_size), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require("test"), int(self.cfg.data.eval_batch_size), shuffle=False)
