"""The journal of a scoring job: every finished row on disk at once, with the settings that made it.

``<out>.journal.jsonl`` (beside the predictions CSV: :func:`journal_path`) gets one JSON line per
finished video, flushed to disk (``fsync``) before the next video starts, so a job killed by any
signal keeps every row it finished; the CSV and JSON are rewritten from the rows, atomically, every
few videos and at the end. Each session of a job first appends a header line with its scoring
settings (:func:`scoring_settings`: a hash of the weights as they score, the model, windows, frame
rate, face and audio front ends, aggregation, precision) and their id (:func:`settings_id`); every
row carries the id of the settings that made it (``VideoPrediction.settings``, also a CSV column).

Resuming (:func:`previous_rows`) reads the CSV and the journal. Rows made with other settings are
refused, naming the settings that differ (:class:`ResumeError`), unless mixing is asked for; the
JSON file then lists the settings of every id its rows carry.

Lines::

    {"type": "settings", "format": "havic-journal-1", "id": "3f2a...", "settings": {"infer.hop_s": 0.4, ...}}
    {"type": "row", "row": {"path": "a.mp4", "score": 0.91, ...}}
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from havic.predictions import VideoPrediction, read_predictions
from havic.utils.io import atomic_write_text

__all__ = [
    "JOURNAL_FORMAT", "Journal", "JournalContent", "ResumeError", "journal_path", "previous_rows", "read_journal",
    "scoring_settings", "settings_diff", "settings_id", "weights_sha256",
]

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "havic-journal-1"
# The data settings that change what a window looks like (the rest of data.* is training or paths).
DATA_SETTINGS = ("clip_seconds", "fps", "face.detector", "face.conf_threshold", "face.margin", "face.square",
                 "face.max_gap_s", "audio")
# infer.* keys that change no score: speed and the report's decision line.
INFER_IGNORED = ("batch_size", "threshold")


class ResumeError(ValueError):
    """Rows of an earlier job cannot be resumed with these settings; the message names what differs."""


def journal_path(out_csv: str | os.PathLike) -> Path:
    """The journal beside a predictions CSV: ``p.csv`` -> ``p.journal.jsonl``."""
    return Path(out_csv).with_suffix(".journal.jsonl")


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a network's tensors as they score: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def scoring_settings(cfg: DictConfig, model: nn.Module | None = None, **extra: Any) -> dict[str, Any]:
    """Everything a row's score depends on, as ``dotted.key -> value`` (JSON values).

    The ``model`` section, the data settings of :data:`DATA_SETTINGS`, the ``infer`` section but
    :data:`INFER_IGNORED`, ``weights_sha256`` (:func:`weights_sha256` of `model`), whether its heads
    were trained, and `extra` (e.g. how the weights file was read).
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    _flatten("model", container["model"], out)
    data: dict[str, Any] = {}
    _flatten("data", container["data"], data)
    out.update({k: v for k, v in data.items() if any(k == f"data.{s}" or k.startswith(f"data.{s}.")
                                                       for s in DATA_SETTINGS)})
    _flatten("infer", {k: v for k, v in container["infer"].items() if k not in INFER_IGNORED}, out)
    if model is not None:
        out["weights_sha256"] = weights_sha256(model)
        out["heads_trained"] = bool(getattr(model, "heads_trained", True))
    out.update(extra)
    return out


def settings_id(settings: Mapping[str, Any]) -> str:
    """A short id of a settings dict: the first 12 hex digits of the SHA-256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()[:12]


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs (missing: ``(unset)``; hashes shortened), sorted."""
    unset = "(unset)"

    def show(value: Any) -> str:
        return repr(f"{value[:12]}...") if isinstance(value, str) and len(value) > 32 else repr(value)

    keys = sorted(set(old) | set(new))
    return [f"{k}: {show(old.get(k, unset))} -> {show(new.get(k, unset))}" for k in keys
            if old.get(k, unset) != new.get(k, unset)]


@dataclass
class JournalContent:
    """What a journal holds: the settings of each id and the rows, in the order they were written."""

    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[VideoPrediction] = field(default_factory=list)
    n_bad_lines: int = 0


def read_journal(path: str | os.PathLike) -> JournalContent:
    """Read a journal; a line cut short by a kill (the last one) or otherwise unreadable is counted and skipped."""
    content = JournalContent()
    names = {f for f in VideoPrediction.__dataclass_fields__ if f != "sample_crops"}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if entry["type"] == "settings":
                    content.settings[entry["id"]] = dict(entry["settings"])
                elif entry["type"] == "row":
                    content.rows.append(VideoPrediction(**{k: v for k, v in entry["row"].items() if k in names}))
            except (ValueError, KeyError, TypeError):
                content.n_bad_lines += 1
    if content.n_bad_lines:
        log.warning("%s: skipped %d unreadable line(s) (a write cut short by a kill)", path, content.n_bad_lines)
    return content


class Journal:
    """Appends the rows of one job session to its journal, each flushed to disk before :meth:`add` returns.

    Args:
        path: the journal file (:func:`journal_path`).
        settings: the session's :func:`scoring_settings`, written first.
        append: keep an existing journal (resuming) instead of starting a new one.
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any], *, append: bool) -> None:
        self.path = Path(path)
        self.settings = dict(settings)
        self.id = settings_id(self.settings)
        header = json.dumps({"type": "settings", "format": JOURNAL_FORMAT, "id": self.id, "settings": self.settings})
        if append and self.path.is_file():
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                cut = fh.tell() > 0 and fh.seek(-1, os.SEEK_END) >= 0 and fh.read(1) != b"\n"
            self._fh: IO[str] = open(self.path, "a", encoding="utf-8")
            # End a line cut short by a kill, so that it stays one unreadable line of its own.
            self._write(("\n" if cut else "") + header)
        else:
            atomic_write_text(self.path, header + "\n")
            self._fh = open(self.path, "a", encoding="utf-8")

    def _write(self, line: str) -> None:
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def add(self, pred: VideoPrediction) -> None:
        """Append one finished row (its crops are not written)."""
        self._write(json.dumps({"type": "row", "row": pred.to_json()}))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def previous_rows(out_csv: str | os.PathLike, settings: Mapping[str, Any], *, mixed: bool = False
                  ) -> tuple[dict[str, VideoPrediction], dict[str, dict[str, Any]]]:
    """The rows an earlier job left in `out_csv` and its journal, checked against this job's settings.

    Journal rows win over CSV rows of the same path (the journal is written first).

    Args:
        out_csv: the predictions CSV (it and its journal may be missing).
        settings: this job's :func:`scoring_settings`.
        mixed: keep rows made with other settings instead of refusing them.

    Returns:
        (path -> row, settings id -> settings of every id recorded in the journal).

    Raises:
        ResumeError: rows made with other or unrecorded settings, and not `mixed`; the message
            names the keys that differ.
    """
    out_csv = Path(out_csv)
    rows: dict[str, VideoPrediction] = {}
    if out_csv.is_file():
        rows.update((p.path, p) for p in read_predictions(out_csv))
    journal = journal_path(out_csv)
    content = read_journal(journal) if journal.is_file() else JournalContent()
    rows.update((p.path, p) for p in content.rows)
    new_id = settings_id(settings)
    others: dict[str, int] = {}
    for p in rows.values():
        if p.settings != new_id:
            others[p.settings] = others.get(p.settings, 0) + 1
    if others and not mixed:
        parts = []
        for sid, n in sorted(others.items(), key=lambda kv: -kv[1]):
            if sid in content.settings:
                diff = settings_diff(content.settings[sid], settings)
                parts.append(f"{n} row(s) made with {', '.join(diff[:6])}" + (" ..." if len(diff) > 6 else ""))
            else:
                what = f"settings {sid} not recorded in {journal.name}" if sid else "no record of their settings"
                parts.append(f"{n} row(s) with {what}")
        raise ResumeError(
            f"{out_csv}: cannot resume: {'; '.join(parts)} (before -> now). Score into another --out, or pass "
            "--resume-mixed to keep those rows as they are (each row names its settings id)")
    return rows, content.settings
