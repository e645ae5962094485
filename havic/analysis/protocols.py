"""Evaluation protocols of SSR-DFD: the binary task, validation carving, and the train-on-X / test-on-Y matrix.

* The binary task (``fvfa_rvra_only``): real videos against videos whose audio *and* video are
  both manipulated; audio-only and video-only fakes are left out, so audio and video probes are
  compared on the same videos. AVLips (lip-sync fakes, real audio) is used whole, as in the paper.
* The matrix follows SSR-DFD Table 2: columns A-I are (train -> test) pairs over FakeAVCeleb
  (``favc``), AV-Deepfake1M (``av1m``), AVLips (``avlips``) and Deepfake-Eval-2024 (``dfe``); J is
  the mean over the out-of-domain columns B, D, E, F, H, I present. With other dataset names every
  (train, test) pair is a column and J averages the pairs whose train and test differ.
* A row's ``baseline_of`` names the row it is the random-initialisation twin of (the shortcut
  baseline: the same extractor with random weights, paper rows 1-2).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from havic.data.manifest import ManifestRow, split_by_video
from havic.metrics import binary_metrics

__all__ = ["MatrixRow", "SSR_DATASETS", "TABLE2_COLUMNS", "carve_val", "labels_of", "matrix_columns", "mean_ood",
           "run_matrix", "ssr_binary"]

log = logging.getLogger(__name__)

SSR_DATASETS = ("favc", "av1m", "avlips", "dfe")
# (column, train, test), SSR-DFD Table 2; J = mean of the out-of-domain ones.
TABLE2_COLUMNS = (("A", "favc", "favc"), ("B", "av1m", "favc"), ("C", "av1m", "av1m"), ("D", "favc", "av1m"),
                  ("E", "favc", "avlips"), ("F", "av1m", "avlips"), ("G", "dfe", "dfe"), ("H", "favc", "dfe"),
                  ("I", "av1m", "dfe"))


def ssr_binary(rows: Sequence[ManifestRow]) -> list[ManifestRow]:
    """The RVRA-vs-FVFA task: reals, and fakes with both audio_label and video_label 1."""
    return [r for r in rows if r.label == 0 or (r.audio_label == 1 and r.video_label == 1)]


def carve_val(rows: Sequence[ManifestRow], fraction: float = 0.1, seed: int = 43) -> list[ManifestRow]:
    """Rows with a ``val`` subset: unchanged if they have one, else a seeded, label-stratified `fraction` of train."""
    rows = list(rows)
    if any(r.split == "val" for r in rows):
        return rows
    train = [r for r in rows if r.split == "train"]
    if len(train) < 2:
        raise ValueError(f"cannot carve a validation subset out of {len(train)} training video(s)")
    moved = {r.path: r.split for r in split_by_video(train, (1 - fraction, fraction), seed, ("label",))}
    return [replace(r, split="val" if moved.get(r.path) == "test" else r.split) for r in rows]


def labels_of(rows: Sequence[ManifestRow], split: str | None = None) -> dict[str, int]:
    """``{path: label}`` of the rows in `split` (None: all rows)."""
    return {r.path: int(r.label) for r in rows if split is None or r.split == split}


def matrix_columns(train_sets: Sequence[str], test_sets: Sequence[str]) -> list[tuple[str, str, str]]:
    """The (column, train, test) triples shown: Table 2's when every name is an SSR dataset, else every pair."""
    if set(train_sets) <= set(SSR_DATASETS) and set(test_sets) <= set(SSR_DATASETS):
        return [c for c in TABLE2_COLUMNS if c[1] in train_sets and c[2] in test_sets]
    return [(f"{x}->{y}", x, y) for x in train_sets for y in test_sets]


def mean_ood(aucs: Mapping[tuple[str, str], float | None], columns: Sequence[tuple[str, str, str]]) -> float | None:
    """Mean AUC over the out-of-domain columns (train != test) that have a value; None if none has."""
    values = [aucs.get((x, y)) for _, x, y in columns if x != y]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


@dataclass
class MatrixRow:
    """One feature's row of the matrix.

    Attributes:
        name: the feature (e.g. ``havic/video/12``).
        modality: audio / video / audio-visual.
        cells: (train, test) -> binary metrics (``auc``, ``ap``, ``n``, ...).
        baseline_of: the row this one is the random-initialisation twin of, or None.
        training: train dataset -> training info (best epoch, val loss).
    """

    name: str
    modality: str = ""
    cells: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    baseline_of: str | None = None
    training: dict[str, dict[str, Any]] = field(default_factory=dict)

    def aucs(self) -> dict[tuple[str, str], float | None]:
        return {k: v.get("auc") for k, v in self.cells.items()}


def run_matrix(name: str, datasets: Mapping[str, tuple[Mapping[str, Any], Sequence[ManifestRow]]],
               train_on: Sequence[str], test_on: Sequence[str], config: Any = None, modality: str = "",
               baseline_of: str | None = None) -> tuple[MatrixRow, dict[tuple[str, str], list[Any]]]:
    """Trains one probe per training dataset and tests it on the test subset of every test dataset.

    Args:
        name: the feature's name (the row label).
        datasets: dataset -> (video id -> features, manifest rows keyed by the same ids in ``path``);
            rows need ``split`` (train / val / test; val is carved from train when absent).
        train_on: datasets to train on (need train rows).
        test_on: datasets to test on (their ``test`` rows).
        config: a :class:`havic.analysis.training.ProbeConfig` (default: the paper's).
        modality, baseline_of: stored on the row.

    Returns:
        ``(row, {(train, test): scored videos})``.
    """
    from havic.analysis.training import SequenceSet, score_probe, train_probe

    row = MatrixRow(name, modality, baseline_of=baseline_of)
    scored: dict[tuple[str, str], list[Any]] = {}
    for x in train_on:
        feats, rows = datasets[x]
        rows = carve_val(rows)
        probe, info = train_probe(SequenceSet(feats, labels_of(rows, "train")),
                                  SequenceSet(feats, labels_of(rows, "val")), config)
        row.training[x] = info
        for y in test_on:
            test_feats, test_rows = datasets[y]
            videos = score_probe(probe, test_feats, labels_of(test_rows, "test"))
            scored[(x, y)] = videos
            row.cells[(x, y)] = binary_metrics([v.label for v in videos], [v.score for v in videos], threshold=0.0)
            log.info("%s: %s -> %s AUC %s", name, x, y, row.cells[(x, y)]["auc"])
    return row, scored
