"""The extractor interface: a video file in, named :class:`~havic.features.records.FeatureSequence` out.

Every encoder (HAVIC, Wav2Vec2, CLIP, VideoMAE; AV-HuBERT, BRAVEn or FSFM later) is one module
with one :class:`Extractor` subclass. The feature store (:mod:`havic.features.store`) only needs
:meth:`Extractor.settings` (everything that changes the stored values; a store written with other
settings is refused) and :meth:`Extractor.extract`.
"""
from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from havic.features.records import FeatureSequence

__all__ = ["Extractor", "weights_fingerprint"]

_HASHED_BYTES = 1 << 20     # per end of each weights file; whole multi-GB files would take minutes to hash


def weights_fingerprint(files: Iterable[str | os.PathLike]) -> str:
    """A short hash that changes when the weights change: names, sizes and the first and last MiB of every file.

    Reading 2 MiB per file keeps it cheap for multi-GB checkpoints; two different trainings of the
    same architecture differ in every tensor, so their first and last MiB differ too.
    """
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(Path(p) for p in files):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(_HASHED_BYTES))
            if size > 2 * _HASHED_BYTES:
                fh.seek(size - _HASHED_BYTES)
                h.update(fh.read(_HASHED_BYTES))
    return h.hexdigest()


class Extractor(ABC):
    """Turns one video file into named feature sequences.

    Args:
        device: where the encoder runs.
        precision: "fp32", or "bf16" / "fp16" (CUDA only, :mod:`havic.precision`).
        batch_size: encoder inputs per forward pass (windows, frames or chunks).

    Attributes:
        name: the extractor's family ("havic", "wav2vec2", "clip", "videomae").
        progress: called as ``progress(done, planned)`` within a video (e.g. a progress bar), or None.
    """

    name: str = ""

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.progress: Callable[[int, int], None] | None = None

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the values: ``extractor``, ``weights``, ``fingerprint``, layers, rates, inputs.

        Flat and JSON-serialisable; device and batch size are not part of it (they do not change
        the values beyond float rounding), the precision is.
        """

    @abstractmethod
    def extract(self, file: str | os.PathLike) -> list[FeatureSequence]:
        """The feature sequences of one video.

        Raises:
            havic.data.errors.MediaError: a video that cannot be used (the reason names why).
        """

    def _report(self, done: int, planned: int) -> None:
        if self.progress is not None:
            self.progress(done, planned)
