"""Probe inputs from a feature store: sequences by name, read lazily, and manifest-like rows from its index.

A small adapter over :class:`havic.features.store.FeatureStore` (written by ``havic
extract-features``): the video id is the path the store was given (the manifest path), so
features, index rows and manifest rows meet on it. Sequences are read from disk when a video is
asked for, not all at once: paper-scale stores (3840-d at 25 Hz) do not fit in memory. A name
``A+B`` asks for the early fusion of sequences ``A`` and ``B``
(:func:`havic.analysis.fusion.early_fusion`).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from havic.analysis.fusion import early_fusion
from havic.data.manifest import ManifestRow, read_manifest
from havic.features.records import FeatureSequence

__all__ = ["StoreFeatures", "load_features", "store_rows"]


def store_rows(store_dir: str | os.PathLike, manifest: str | os.PathLike | None = None) -> list[ManifestRow]:
    """The stored videos as manifest rows.

    Args:
        store_dir: the feature store.
        manifest: when given, its rows (audio/video labels, category, split) for the stored videos;
            else label, category and split from the store index (audio/video labels unknown).
            Either way the index's ``duration_s`` is added as an extra column.
    """
    from dataclasses import replace

    from havic.features.store import FeatureStore

    index = {r["path"]: r for r in FeatureStore(store_dir).index()}
    if manifest is not None:
        return [replace(r, extra={**r.extra, "duration_s": index[r.path]["duration_s"]})
                for r in read_manifest(manifest) if r.path in index]
    rows = []
    for p, r in index.items():
        if r["label"] not in ("0", "1"):
            raise ValueError(f"{store_dir}: video {p!r} has no label in the store index; give its manifest")
        rows.append(ManifestRow(p, int(r["label"]), category=r["category"], split=r["split"],
                                extra={"duration_s": r["duration_s"]}))
    return rows


class StoreFeatures(Mapping[str, FeatureSequence]):
    """``{video path: sequence}`` over a store, read on access.

    Args:
        store_dir: the feature store.
        name: a sequence name (``havic/video/12``), or ``A+B`` for their early fusion (each part
            L2-normalised with `normalize_parts`, cut to the common length).
        paths: the videos (default: every video in the index).
        normalize_parts: see `name`.

    Raises:
        KeyError: a listed video that is not stored, or lacks a sequence (the message lists what it has).
        ValueError: ``A+B`` of more than two parts.
    """

    def __init__(self, store_dir: str | os.PathLike, name: str, paths: Sequence[str] | None = None,
                 normalize_parts: bool = True) -> None:
        from havic.features.store import FeatureStore

        self.store, self.name, self.normalize_parts = FeatureStore(store_dir), name, normalize_parts
        self.parts = name.split("+")
        if len(self.parts) > 2:
            raise ValueError(f"early fusion joins two sequences, got {name!r}")
        index = {r["path"]: r for r in self.store.index()}
        self.paths = list(paths) if paths is not None else list(index)
        for p in self.paths:
            if p not in index:
                raise KeyError(f"{Path(store_dir)}: video {p!r} is not in the store index")
            names = index[p]["names"].split(";")
            missing = [n for n in self.parts if n not in names]
            if missing:
                raise KeyError(f"{Path(store_dir)}: video {p!r} has no sequence {missing[0]!r}; it has {sorted(names)}")

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __getitem__(self, path: str) -> FeatureSequence:
        seqs = {s.name: s for s in self.store.read(path)}
        if len(self.parts) == 1:
            return seqs[self.name]
        a, b = seqs[self.parts[0]], seqs[self.parts[1]]
        if a.rate_hz != b.rate_hz:
            raise ValueError(f"{path}: early fusion needs one rate, {self.name!r} has {a.rate_hz} and {b.rate_hz} Hz")
        return FeatureSequence(self.name, early_fusion(a.values, b.values, self.normalize_parts), a.rate_hz,
                               "audio-visual", a.start_s)


def load_features(store_dir: str | os.PathLike, name: str, paths: Sequence[str] | None = None,
                  normalize_parts: bool = True) -> StoreFeatures:
    """The sequence `name` of the stored videos (or of `paths`), read on access; see :class:`StoreFeatures`."""
    return StoreFeatures(store_dir, name, paths, normalize_parts)
