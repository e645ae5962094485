"""Clips of the cache as model inputs: dict samples for pretraining and fine-tuning.

A sample holds the face frames as the video input (``(3, F, S, S)`` float in [0, 1], not mean/std
normalised, as in the reference, docs/official-differences.md#video-input) and the fbank as the
audio input (length fitted to the model's frame count and normalised at read time,
docs/official-differences.md#audio-input), with the clip's labels.

Differences from the reference dataset (docs/official-differences.md#video-input): an unreadable
clip raises an error that names its cache file instead of becoming a zero tensor, and clips without
audio are excluded when the dataset is built, with a warning and a count, instead of being silently
replaced.
"""
from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from havic.data.audio import FBANK_MEAN, FBANK_STD, LengthPolicy, fit_length, normalise_fbank
from havic.data.cache import CACHE_JSON, ClipCache, ClipRecord
from havic.data.errors import MediaError
from havic.data.transforms import AudioAugment, VideoAugment

__all__ = ["ClipDataset", "seed_worker"]

log = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """The clips of `records`, read from `cache`, as dict samples.

    Sample fields:

    * ``video``: (3, F, S, S) float32 RGB in [0, 1] (augmented when `video_augment` is given);
    * ``audio``: (audio_frames, num_mel_bins) float32 normalised log-mel (augmented when
      `audio_augment` is given); zeros, the normalised mean, for a clip without audio;
    * ``has_audio``: () bool;
    * ``label``, ``audio_label``, ``video_label``: () float32, 1 = fake, 0 = real, -1 = unknown;
    * ``key`` (str), ``clip`` (int), ``index`` (int, position in this dataset).

    Args:
        cache: the clip cache.
        records: the clips to serve (e.g. ``cache.records("train")``).
        num_frames: F, frames per clip; must equal the cached frame count.
        image_size: S, crop side in pixels; must equal the cached crop size.
        audio_frames: model input length of the fbank (after length fitting).
        num_mel_bins: mel bins; must equal the cached fbank's.
        length_policy: "stretch" or "pad_crop" (:func:`havic.data.audio.fit_length`).
        norm_mean: fbank normalisation mean.
        norm_std: fbank normalisation std.
        video_augment: clip-consistent video augmentation, or None.
        audio_augment: fbank augmentation, or None.
        require_audio: exclude clips without audio (logged and counted in :attr:`n_excluded`).

    Raises:
        ValueError: sizes that differ from those recorded in the cache's settings (checked again
            on every sample against the stored arrays).

    Attributes:
        records: the clips served, in order (sample i is records[i]).
        n_excluded: number of clips left out, by reason (``"no_audio"``).
    """

    def __init__(
        self,
        cache: ClipCache,
        records: Sequence[ClipRecord],
        *,
        num_frames: int,
        image_size: int,
        audio_frames: int,
        num_mel_bins: int,
        length_policy: LengthPolicy = "stretch",
        norm_mean: float = FBANK_MEAN,
        norm_std: float = FBANK_STD,
        video_augment: VideoAugment | None = None,
        audio_augment: AudioAugment | None = None,
        require_audio: bool = True,
    ) -> None:
        if length_policy not in ("stretch", "pad_crop"):
            raise ValueError(f"length_policy={length_policy!r}: expected 'stretch' or 'pad_crop'")
        for name, value in (("num_frames", num_frames), ("image_size", image_size),
                            ("audio_frames", audio_frames), ("num_mel_bins", num_mel_bins)):
            if value < 1:
                raise ValueError(f"{name}={value}: must be >= 1")
        _check_cache_settings(cache, num_frames=num_frames, image_size=image_size, num_mel_bins=num_mel_bins)
        self.cache = cache
        self.num_frames = num_frames
        self.image_size = image_size
        self.audio_frames = audio_frames
        self.num_mel_bins = num_mel_bins
        self.length_policy = length_policy
        self.norm_mean = norm_mean
        self.norm_std = norm_std
        self.video_augment = video_augment
        self.audio_augment = audio_augment
        self.require_audio = require_audio
        self.n_excluded: Counter[str] = Counter()
        kept = []
        for record in records:
            if require_audio and not record.has_audio:
                self.n_excluded["no_audio"] += 1
            else:
                kept.append(record)
        self.records: list[ClipRecord] = kept
        if self.n_excluded:
            log.warning(
                "%s: excluded %d of %d clips (%s); %d remain",
                cache.root, sum(self.n_excluded.values()), len(records),
                ", ".join(f"{reason}: {n}" for reason, n in sorted(self.n_excluded.items())), len(kept),
            )
        self._generator: torch.Generator | None = None
        self._generator_pid: int | None = None

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        cache: ClipCache,
        records: Sequence[ClipRecord],
        *,
        video_augment: VideoAugment | None = None,
        audio_augment: AudioAugment | None = None,
        require_audio: bool = True,
    ) -> "ClipDataset":
        """The clips of `records` with the sizes and audio front end of a full configuration."""
        return cls(
            cache, records,
            num_frames=int(cfg.model.video.num_frames), image_size=int(cfg.model.video.image_size),
            audio_frames=int(cfg.model.audio.num_frames), num_mel_bins=int(cfg.model.audio.num_mel_bins),
            length_policy=cfg.data.audio.length_policy, norm_mean=float(cfg.data.audio.norm_mean),
            norm_std=float(cfg.data.audio.norm_std), video_augment=video_augment, audio_augment=audio_augment,
            require_audio=require_audio,
        )

    def __len__(self) -> int:
        return len(self.records)

    # -- randomness ---------------------------------------------------------------------------

    def reseed(self, seed: int) -> None:
        """Seed the augmentation generator of this process (called by :func:`seed_worker`)."""
        self._generator = torch.Generator().manual_seed(seed)
        self._generator_pid = os.getpid()

    def _rng(self) -> torch.Generator:
        # Lazily seeded from torch.initial_seed() in a process that has not been reseeded (the main
        # process with num_workers=0, or a worker started without seed_worker).
        if self._generator is None or self._generator_pid != os.getpid():
            self.reseed(torch.initial_seed())
        return self._generator  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        # A worker process gets its own generator (seed_worker); none is carried across.
        state = self.__dict__.copy()
        state["_generator"] = None
        state["_generator_pid"] = None
        return state

    # -- reading ------------------------------------------------------------------------------

    def _load(self, record: ClipRecord):
        file = self.cache.root / record.file
        try:
            return self.cache.load_clip(record)
        except Exception as err:  # noqa: BLE001 - every reading problem becomes one typed error
            raise MediaError(
                file, "unreadable", f"clip {record.clip} of {record.path!r}: {type(err).__name__}: {err}"
            ) from err

    def _check_sizes(self, record: ClipRecord, frames: np.ndarray, fbank: np.ndarray | None) -> None:
        expected = (self.num_frames, self.image_size, self.image_size, 3)
        if frames.shape != expected:
            raise ValueError(
                f"{self.cache.root / record.file}: clip {record.clip} has frames of shape {frames.shape} "
                f"(frames, height, width, 3), but num_frames={self.num_frames} and image_size={self.image_size} "
                f"were requested; the cache must be rebuilt for these sizes"
            )
        if fbank is not None and (fbank.ndim != 2 or fbank.shape[1] != self.num_mel_bins):
            raise ValueError(
                f"{self.cache.root / record.file}: clip {record.clip} has an fbank of shape {fbank.shape} "
                f"(frames, mel bins), but num_mel_bins={self.num_mel_bins} was requested; "
                f"the cache must be rebuilt for this setting"
            )

    def video_input(self, frames: np.ndarray) -> Tensor:
        """(F, S, S, 3) uint8 crops -> (3, F, S, S) float32 in [0, 1], augmented if configured."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (F, 3, S, S)
        if self.video_augment is not None:
            x = self.video_augment(x, self._rng())
        else:
            x = x.to(torch.float32).div_(255.0)
        return x.permute(1, 0, 2, 3).contiguous()

    def audio_input(self, fbank: np.ndarray | None) -> Tensor:
        """(T_raw, M) raw log-mel -> (audio_frames, M) normalised, augmented if configured."""
        if fbank is None:
            return torch.zeros(self.audio_frames, self.num_mel_bins, dtype=torch.float32)
        x = fit_length(torch.from_numpy(np.asarray(fbank, dtype=np.float32)), self.audio_frames, self.length_policy)
        x = normalise_fbank(x, self.norm_mean, self.norm_std)
        if self.audio_augment is not None:
            x = self.audio_augment(x, self._rng())
        return x.contiguous()

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        data = self._load(record)
        fbank = data.fbank if record.has_audio else None
        if record.has_audio and data.fbank is None:
            raise MediaError(self.cache.root / record.file, "corrupt",
                             f"clip {record.clip}: the index says it has audio but the entry holds no fbank")
        self._check_sizes(record, data.frames, fbank)
        return {
            "video": self.video_input(data.frames),
            "audio": self.audio_input(fbank),
            "has_audio": torch.tensor(fbank is not None),
            "label": torch.tensor(float(record.label)),
            "audio_label": torch.tensor(float(record.audio_label)),
            "video_label": torch.tensor(float(record.video_label)),
            "key": record.key,
            "clip": record.clip,
            "index": index,
        }

    def __repr__(self) -> str:
        return (f"ClipDataset({len(self)} clips from {self.cache.root}, excluded={dict(self.n_excluded)}, "
                f"augment={self.video_augment is not None or self.audio_augment is not None})")


def _check_cache_settings(cache: ClipCache, **requested: int) -> None:
    """Fail early when the cache's recorded sizes differ from the requested ones (each sample is checked too)."""
    names = {"num_frames": "num_frames", "image_size": "image_size", "num_mel_bins": "audio.num_mel_bins"}
    stored = getattr(cache, "settings", {}) or {}
    bad = {arg: (stored[names[arg]], value) for arg, value in requested.items()
           if names[arg] in stored and stored[names[arg]] != value}
    if bad:
        details = ", ".join(f"{arg}: cache {have}, requested {want}" for arg, (have, want) in bad.items())
        raise ValueError(f"{cache.root / CACHE_JSON}: the cache holds other sizes ({details}); "
                         "rebuild the cache or request its sizes")


def seed_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn signature
    """DataLoader ``worker_init_fn``: seed python, numpy and the dataset's augmentation generator.

    ``torch.initial_seed()`` in a worker is the loader's base seed plus the worker id; the base seed
    is drawn from the main process's generator every time an iterator starts, so workers differ
    from each other and from one epoch to the next, and a seeded run repeats exactly.
    """
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    info = get_worker_info()
    dataset = info.dataset if info is not None else None
    if hasattr(dataset, "reseed"):
        dataset.reseed(seed)
