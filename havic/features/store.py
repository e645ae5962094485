"""The feature store: one safetensors file per video, an index CSV and the failures, resumable.

Layout of a store folder (written by ``havic extract-features``)::

    store.json                   format version and the extractor settings the store was written with
    index.csv                    one row per stored video (:data:`INDEX_COLUMNS`), in input order
    failures.csv                 item, reason, detail: every input that has no entry
    videos/<hh>/<key>.safetensors   one entry per video (<hh>: last two characters of the key,
                                 :func:`havic.data.cache.video_key` of the input's path)
    failures/<hh>/<key>.json     failure marker of a video that could not be used

An entry holds one (T, D) tensor per sequence, named as the sequence (``havic/video/12``), in
float32 or float16 (``store_dtype``), and string metadata: ``meta``, the JSON of the video
(path, label, category, split, duration) and of every sequence (rate_hz, modality, start_s,
meta), and ``settings``, the JSON of the store's settings (extractor, weights fingerprint,
layers, rates, ...), so one file read alone says what it holds.

Entries, markers and CSVs are written under a temporary name and renamed (:mod:`havic.utils.io`):
an entry that exists is complete, so a run killed at any point resumes by skipping the videos
that have an entry (and those with a failure marker, unless retried). A store opened with other
settings is refused, and the error names every differing key.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from havic.checkpoints import read_safetensors_metadata, save_safetensors
from havic.data.cache import refuse_other_settings, video_key
from havic.features.records import FeatureSequence
from havic.utils.io import atomic_write_csv, atomic_write_json

__all__ = ["FAILURE_COLUMNS", "FORMAT_VERSION", "INDEX_COLUMNS", "STORE_DTYPES", "FeatureStore", "StoredVideo"]

FORMAT_VERSION = 1
STORE_JSON = "store.json"
INDEX_CSV = "index.csv"
FAILURES_CSV = "failures.csv"
INDEX_COLUMNS = ("path", "key", "file", "label", "category", "split", "duration_s", "names", "lengths")
FAILURE_COLUMNS = ("item", "reason", "detail")
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class StoredVideo:
    """One video as the input list names it.

    Attributes:
        path: the name it is stored under (a manifest path, or the file given).
        label: 1 fake, 0 real, None unknown.
        category, split: manifest fields ("" when unknown).
    """

    path: str
    label: int | None = None
    category: str = ""
    split: str = ""

    @property
    def key(self) -> str:
        return video_key(self.path)


class FeatureStore:
    """A store folder (see the module docstring).

    Args:
        root: the folder holding ``store.json``.

    Raises:
        FileNotFoundError: no ``store.json`` under `root`.
        ValueError: an unknown format version.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        info_path = self.root / STORE_JSON
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.root} is not a feature store (no {STORE_JSON}); write one with "
                                    "havic extract-features")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if int(info.get("format_version", -1)) != FORMAT_VERSION:
            raise ValueError(f"{self.root}: feature store format {info.get('format_version')}, this code reads "
                             f"{FORMAT_VERSION}")
        self.settings: dict[str, Any] = dict(info["settings"])

    @classmethod
    def create(cls, root: str | os.PathLike, settings: Mapping[str, Any]) -> FeatureStore:
        """Open the store at `root`, creating it with `settings` when it does not exist.

        Raises:
            ValueError: the store exists with other settings (the message names the keys).
        """
        root = Path(root)
        if not (root / STORE_JSON).is_file():
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(root / STORE_JSON, {"format_version": FORMAT_VERSION, "settings": dict(settings)})
        store = cls(root)
        store.check_settings(settings)
        return store

    def check_settings(self, expected: Mapping[str, Any]) -> None:
        """Raise a ValueError naming every setting that differs from `expected`."""
        refuse_other_settings(self.root, "store", self.settings, expected)

    @property
    def dtype(self) -> torch.dtype:
        return STORE_DTYPES[str(self.settings.get("store_dtype", "float32"))]

    # -- entries ---------------------------------------------------------------------------------

    def entry_path(self, key: str) -> Path:
        return self.root / "videos" / key[-2:] / f"{key}.safetensors"

    def marker_path(self, key: str) -> Path:
        return self.root / "failures" / key[-2:] / f"{key}.json"

    def is_done(self, video: StoredVideo, retry_failed: bool = False) -> bool:
        """Whether `video` has an entry, or (unless `retry_failed`) a failure marker."""
        return self.entry_path(video.key).is_file() or (not retry_failed and self.marker_path(video.key).is_file())

    def write(self, video: StoredVideo, sequences: Iterable[FeatureSequence], duration_s: float | None = None) -> Path:
        """Write the entry of `video` atomically (and drop an old failure marker)."""
        seqs = list(sequences)
        names = [s.name for s in seqs]
        if len(set(names)) != len(names):
            raise ValueError(f"{video.path}: repeated sequence names {names}")
        meta = {"path": video.path, "label": video.label, "category": video.category, "split": video.split,
                "duration_s": duration_s,
                "sequences": {s.name: {"rate_hz": s.rate_hz, "modality": s.modality, "start_s": s.start_s,
                                       "meta": s.meta} for s in seqs}}
        tensors = {s.name: s.values.to(self.dtype) for s in seqs}
        path = self.entry_path(video.key)
        save_safetensors(path, tensors, {"meta": json.dumps(meta), "settings": json.dumps(self.settings)})
        self.marker_path(video.key).unlink(missing_ok=True)
        return path

    def write_failure(self, video: StoredVideo, reason: str, detail: str = "") -> Path:
        path = self.marker_path(video.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, {"item": video.path, "reason": reason, "detail": detail})

    def read(self, video: StoredVideo | str) -> list[FeatureSequence]:
        """The sequences of one video (a :class:`StoredVideo` or its path), as float32."""
        from safetensors.torch import load_file

        key = video.key if isinstance(video, StoredVideo) else video_key(video)
        path = self.entry_path(key)
        meta = json.loads(read_safetensors_metadata(path)["meta"])
        tensors = load_file(str(path))
        return [FeatureSequence(name, tensors[name], m["rate_hz"], m["modality"], m["start_s"], m["meta"])
                for name, m in meta["sequences"].items()]

    def entry_meta(self, key: str) -> dict[str, Any]:
        """The ``meta`` JSON of an entry, without reading its tensors."""
        return json.loads(read_safetensors_metadata(self.entry_path(key))["meta"])

    # -- index -----------------------------------------------------------------------------------

    def build_index(self, videos: Iterable[StoredVideo]) -> tuple[int, int]:
        """Rewrite ``index.csv`` and ``failures.csv`` for `videos` (in their order): (stored, failed)."""
        rows, failures = [], []
        for v in videos:
            if self.entry_path(v.key).is_file():
                m = self.entry_meta(v.key)
                seqs = m["sequences"]
                with safe_open(str(self.entry_path(v.key)), framework="pt") as fh:
                    lengths = [fh.get_slice(n).get_shape()[0] for n in seqs]
                rows.append([v.path, v.key, str(self.entry_path(v.key).relative_to(self.root)),
                             "" if v.label is None else v.label, v.category, v.split, m.get("duration_s") or "",
                             ";".join(seqs), ";".join(map(str, lengths))])
            elif self.marker_path(v.key).is_file():
                f = json.loads(self.marker_path(v.key).read_text(encoding="utf-8"))
                failures.append([v.path, f["reason"], f.get("detail", "")])
        atomic_write_csv(self.root / INDEX_CSV, INDEX_COLUMNS, rows)
        atomic_write_csv(self.root / FAILURES_CSV, FAILURE_COLUMNS, failures)
        return len(rows), len(failures)

    def index(self) -> list[dict[str, str]]:
        """The rows of ``index.csv``."""
        with (self.root / INDEX_CSV).open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def failures(self) -> list[dict[str, str]]:
        """The rows of ``failures.csv`` (item, reason, detail)."""
        path = self.root / FAILURES_CSV
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"
