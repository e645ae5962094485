"""Synthetic audio-visual clips: the data source of smoke runs and tests (``train.synthetic_clips``).

Each clip is a deterministic function of ``(seed, split, index)``, built in ``__getitem__``, so it
costs no memory up front, is the same in every worker and process, and the datasets pickle (for
``ddp_spawn``). The clips hold structure a model can learn, so a falling loss means something:

* video: a Gaussian blob whose brightness oscillates with the clip's frequency and phase;
* audio: a band of mel bins whose energy oscillates with the *same* frequency and phase over time
  (audio and video segments correspond, as the contrastive loss expects);
* fakes (fine-tuning only): a fake video stream carries a checkerboard texture, a fake audio
  stream alternating stripes across the mel bins. Labels cycle by index over RVRA, RVFA, FVRA,
  FVFA, so every batch of four holds all combinations.

Batches have the format of :class:`havic.data.datamodule.HavicDataModule`: ``video`` (B, 3, T, S, S)
in [0, 1], ``audio`` (B, T_a, F) normalised fbank-like values, ``has_audio``, ``label``,
``audio_label``, ``video_label`` (float), ``key``, ``clip``, ``index``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["EpochShuffleSampler", "SyntheticClips", "SyntheticDataModule", "batch_of"]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def _generator(*parts: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


class SyntheticClips(Dataset):
    """Deterministic random clips.

    Args:
        num_clips: dataset length.
        num_frames, image_size: video clip size (T, S).
        audio_frames, num_mel_bins: audio input size (T_a, F).
        seed: base seed; ``split`` selects an independent set of clips.
        split: "train", "val" or "test".
        with_fakes: label clips by index (RVRA, RVFA, FVRA, FVFA) and add the fake artefacts;
            False gives real clips only (pretraining).
    """

    def __init__(
        self, num_clips: int, *, num_frames: int, image_size: int, audio_frames: int, num_mel_bins: int,
        seed: int = 0, split: str = "train", with_fakes: bool = True,
    ) -> None:
        if num_clips < 1:
            raise ValueError(f"SyntheticClips needs num_clips >= 1, got {num_clips}")
        if split not in SPLIT_IDS:
            raise ValueError(f"split {split!r}: expected one of {list(SPLIT_IDS)}")
        self.num_clips = num_clips
        self.num_frames, self.image_size = num_frames, image_size
        self.audio_frames, self.num_mel_bins = audio_frames, num_mel_bins
        self.seed, self.split, self.with_fakes = seed, split, with_fakes

    def __len__(self) -> int:
        return self.num_clips

    def labels(self, index: int) -> tuple[int, int]:
        """(audio_label, video_label) of clip ``index``."""
        if not self.with_fakes:
            return 0, 0
        return index % 2, (index // 2) % 2

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip index {index} out of range [0, {self.num_clips})")
        g = _generator(self.seed, SPLIT_IDS[self.split], index)
        t_v, s, t_a, f = self.num_frames, self.image_size, self.audio_frames, self.num_mel_bins
        freq = 1.0 + 2.0 * torch.rand((), generator=g)  # cycles per clip
        phase = 2 * math.pi * torch.rand((), generator=g)
        audio_fake, video_fake = self.labels(index)

        # Video: a blob whose brightness follows sin(2 pi freq t + phase).
        centre = 0.25 * s + 0.5 * s * torch.rand(2, generator=g)
        yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32),
                                indexing="ij")
        blob = torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * (s / 5) ** 2))  # (S, S)
        wave_v = torch.sin(2 * math.pi * freq * torch.arange(t_v) / t_v + phase)  # (T,)
        colour = 0.2 + 0.6 * torch.rand(3, generator=g)
        video = 0.15 + 0.5 * colour[:, None, None, None] * blob * (0.6 + 0.4 * wave_v[None, :, None, None])
        if video_fake:
            checker = ((yy.long() // 2 + xx.long() // 2) % 2).float() - 0.5
            video = video + 0.3 * checker
        video = video + 0.02 * torch.randn(video.shape, generator=g)

        # Audio: a mel band whose energy follows the same wave over the clip.
        band = int(torch.randint(f // 4, max(f // 4 + 1, 3 * f // 4), (), generator=g))
        profile = torch.exp(-((torch.arange(f) - band) ** 2) / (2 * (f / 8) ** 2))  # (F,)
        wave_a = torch.sin(2 * math.pi * freq * torch.arange(t_a) / t_a + phase)  # (T_a,)
        audio = 2.0 * profile[None, :] * wave_a[:, None] + 0.1 * torch.randn(t_a, f, generator=g)
        if audio_fake:
            audio = audio + 0.8 * (2.0 * (torch.arange(f) % 2) - 1.0)[None, :]
        return {
            "video": video.clamp(0.0, 1.0),
            "audio": audio,
            "has_audio": torch.tensor(True),
            "label": torch.tensor(float(audio_fake or video_fake)),
            "audio_label": torch.tensor(float(audio_fake)),
            "video_label": torch.tensor(float(video_fake)),
            "key": f"synthetic/{self.split}/{index:06d}",
            "clip": 0,
            "index": index,
        }


class EpochShuffleSampler(Sampler[int]):
    """A permutation that depends only on ``(seed, epoch)``: the order survives a resume.

    Lightning calls :meth:`set_epoch` before every training epoch.
    """

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items, self.seed, self.epoch = num_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.num_items, generator=_generator(self.seed, self.epoch, 7919))
        return iter(order.tolist())


class SyntheticDataModule(pl.LightningDataModule):
    """Train / val / test loaders over :class:`SyntheticClips` sized from the configuration.

    Args:
        cfg: the full configuration (sizes from ``model``, batches and workers from ``data``).
        stage: "pretrain" (real clips, full batches only) or "finetune" (labelled clips).
        num_clips: training clips; validation and test get ``max(4, num_clips // 4)`` each.
    """

    def __init__(self, cfg: Any, stage: str, num_clips: int) -> None:
        super().__init__()
        if stage not in ("pretrain", "finetune"):
            raise ValueError(f"stage={stage!r}: expected 'pretrain' or 'finetune'")
        self.cfg, self.stage, self.num_clips = cfg, stage, int(num_clips)

    def dataset(self, split: str) -> SyntheticClips:
        m = self.cfg.model
        n = self.num_clips if split == "train" else max(4, self.num_clips // 4)
        return SyntheticClips(
            n, num_frames=m.video.num_frames, image_size=m.video.image_size, audio_frames=m.audio.num_frames,
            num_mel_bins=m.audio.num_mel_bins, seed=int(self.cfg.seed), split=split,
            with_fakes=self.stage == "finetune",
        )

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, num_workers=int(self.cfg.data.num_workers), **kwargs)

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        sampler = EpochShuffleSampler(len(train), int(self.cfg.seed))
        return self._loader(train, int(self.cfg.data.batch_size), sampler=sampler, drop_last=self.stage == "pretrain")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), int(self.cfg.data.eval_batch_size))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), int(self.cfg.data.eval_batch_size))


def batch_of(dataset: SyntheticClips, indices: list[int]) -> dict[str, Tensor]:
    """Collate ``dataset[i]`` for ``indices`` (tests and previews)."""
    return torch.utils.data.default_collate([dataset[i] for i in indices])
