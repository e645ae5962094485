"""Class-balanced sampling of the fine-tuning training clips (docs/official-differences.md#weighted-sampling).

``four_class`` (the reference): class = audio_label * 2 + video_label, so RVRA, RVFA, FVRA and
FVFA clips are each drawn about a quarter of the time; ``binary``: real and fake clips are each
drawn about half of the time; ``none``: plain shuffling. Weights are N / count(class), draws are
with replacement, and an epoch has as many draws as there are clips unless told otherwise.

Under DDP every rank must draw a different part of the same epoch: :class:`DistributedWeightedSampler`
draws the whole epoch from a generator seeded with ``seed + epoch`` (the same on every rank) and
gives rank r the draws r, r + world, r + 2 * world, ...
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler, WeightedRandomSampler

__all__ = [
    "DistributedWeightedSampler",
    "SAMPLER_MODES",
    "build_sampler",
    "sample_classes",
    "sample_weights",
]

log = logging.getLogger(__name__)

SamplerMode = Literal["none", "four_class", "binary"]
SAMPLER_MODES: tuple[str, ...] = ("none", "four_class", "binary")


class _Labelled(Protocol):
    key: str
    label: int
    audio_label: int
    video_label: int


def _name(record: _Labelled) -> str:
    clip = getattr(record, "clip", None)
    return f"{record.key!r}" + (f" clip {clip}" if clip is not None else "")


def sample_classes(records: Sequence[_Labelled], mode: SamplerMode) -> Tensor:
    """The balancing class of every record.

    Args:
        records: clip records with ``label``, ``audio_label`` and ``video_label``.
        mode: ``four_class`` (audio_label * 2 + video_label) or ``binary`` (label).

    Returns:
        (N,) int64 class ids.

    Raises:
        ValueError: unknown mode, or a label that is not 0/1 (-1 = unknown) for the mode.
    """
    classes = []
    for record in records:
        if mode == "four_class":
            if record.audio_label not in (0, 1) or record.video_label not in (0, 1):
                raise ValueError(
                    f"four_class sampling needs audio and video labels of 0 or 1; record {_name(record)} has "
                    f"audio_label={record.audio_label}, video_label={record.video_label} "
                    "(use data.sampler=binary for datasets without per-modality labels)"
                )
            classes.append(int(record.audio_label) * 2 + int(record.video_label))
        elif mode == "binary":
            if record.label not in (0, 1):
                raise ValueError(f"binary sampling needs label 0 or 1; record {_name(record)} has label={record.label}")
            classes.append(int(record.label))
        else:
            raise ValueError(f"unknown sampling mode {mode!r} for class ids; expected 'four_class' or 'binary'")
    return torch.tensor(classes, dtype=torch.int64)


def sample_weights(records: Sequence[_Labelled], mode: SamplerMode) -> Tensor:
    """Per-record sampling weights: N / count(class of the record); all ones for ``none``.

    Args:
        records: the training clip records.
        mode: ``four_class``, ``binary`` or ``none``.

    Returns:
        (N,) float64 weights.
    """
    if mode not in SAMPLER_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of {list(SAMPLER_MODES)}")
    n = len(records)
    if mode == "none":
        return torch.ones(n, dtype=torch.float64)
    classes = sample_classes(records, mode)
    counts = torch.bincount(classes, minlength=4 if mode == "four_class" else 2).to(torch.float64)
    return n / counts[classes]


class DistributedWeightedSampler(DistributedSampler):
    """Weighted sampling with replacement, split across the ranks of a distributed run.

    Every rank draws the same ``num_replicas * ceil(num_samples / num_replicas)`` indices from a
    generator seeded with ``seed + epoch`` and keeps every ``num_replicas``-th one starting at its
    rank, so the ranks' parts are disjoint positions of one draw and together cover it. Call
    :meth:`set_epoch` at the start of every epoch (Lightning does) for new draws.

    It subclasses :class:`DistributedSampler` so that Lightning uses it as it is instead of wrapping
    it in another distributed sampler.

    Args:
        weights: (N,) non-negative sampling weights.
        num_samples: draws per epoch over all ranks (default N).
        num_replicas: world size.
        rank: this process's rank, 0 <= rank < num_replicas.
        seed: base seed, the same on every rank.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        num_samples: int | None = None,
        *,
        num_replicas: int,
        rank: int,
        seed: int = 0,
    ) -> None:
        # The parent's __init__ would query torch.distributed; this sampler needs only the fields.
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        if self.weights.ndim != 1 or len(self.weights) == 0:
            raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {tuple(self.weights.shape)}")
        if bool((self.weights < 0).any()) or not bool(torch.isfinite(self.weights).all()):
            raise ValueError("weights must be finite and non-negative")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas={num_replicas}")
        self.total_draws = len(self.weights) if num_samples is None else int(num_samples)
        if self.total_draws < 1:
            raise ValueError(f"num_samples={num_samples}: must be >= 1")
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.shuffle = True
        self.drop_last = False
        self.dataset = None
        self.num_samples = math.ceil(self.total_draws / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def draws(self) -> Tensor:
        """All ranks' draws of the current epoch: (total_size,) int64 indices."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draws()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def build_sampler(
    records: Sequence[_Labelled],
    mode: SamplerMode,
    num_samples: int | None = None,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    num_replicas: int = 1,
    rank: int = 0,
) -> WeightedRandomSampler | DistributedWeightedSampler | None:
    """The training sampler for `mode`, or None for ``none`` (the loader then shuffles).

    Args:
        records: the training clip records.
        mode: ``four_class``, ``binary`` or ``none``.
        num_samples: draws per epoch (over all ranks); default len(records).
        seed: seeds the draws (ignored when `generator` is given on a single process).
        generator: generator of a single-process sampler (a plain ``WeightedRandomSampler``).
        num_replicas: world size. Above 1, or with a seed and no generator, the result is a
            :class:`DistributedWeightedSampler`, seeded per epoch (``set_epoch``).
        rank: this process's rank.

    Returns:
        A sampler drawing with replacement, or None.
    """
    weights = sample_weights(records, mode)
    if mode == "none":
        return None
    if len(records) == 0:
        raise ValueError("cannot build a weighted sampler over zero records")
    counts = Counter(sample_classes(records, mode).tolist())
    if len(counts) < (4 if mode == "four_class" else 2):
        missing = sorted(set(range(4 if mode == "four_class" else 2)) - set(counts))
        # A missing class has no weight to rebalance; the others are still balanced among themselves.
        log.warning("%s sampling: classes %s have no training clips", mode, missing)
    if num_replicas > 1 or (seed is not None and generator is None):
        # Seeded by (seed, epoch): the draw of every epoch is reproducible, so a resumed run sees
        # exactly the batches an uninterrupted one would have seen.
        return DistributedWeightedSampler(
            weights, num_samples, num_replicas=num_replicas, rank=rank, seed=0 if seed is None else seed
        )
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        weights, len(records) if num_samples is None else num_samples, replacement=True, generator=generator
    )

