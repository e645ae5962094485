"""Evaluation reports over predictions: coverage, overall and per-group metrics, runs over seeds.

Two levels are kept apart and labelled as such:

* **video level**: one score per video from the sliding-window scorer (:mod:`havic.inference`),
  the number the paper reports for test sets;
* **clip level**: one score per preprocessed 3.2 s clip of a clip cache (:func:`score_clips`), the
  number the official training loop logs during validation.

Failed videos are counted in the coverage line of every report and left out of the metrics, whose
lines each say how many videos they were computed on.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from havic.metrics import binary_metrics, coverage, group_metrics, mean_std, sigmoid
from havic.precision import autocast, prepare_for_inference
from havic.predictions import VideoPrediction

__all__ = [
    "Evaluation",
    "RunSet",
    "evaluate",
    "format_evaluation",
    "join_manifest",
    "score_clips",
    "summarize_runs",
    "write_report",
]

log = logging.getLogger(__name__)

METRICS = ("acc", "ap", "auc")


def join_manifest(preds: Sequence[VideoPrediction], manifest: Sequence[Any]) -> tuple[list[VideoPrediction], int]:
    """Fill missing labels, categories and manifest columns of predictions from a manifest, by path.

    Values already in the predictions are kept. Paths are compared as written, then as POSIX
    paths (``./a/b.mp4`` and ``a/b.mp4`` match).

    Returns:
        (the completed predictions, number of predictions whose path is not in the manifest).
    """
    def norm(p: str) -> str:
        return Path(p).as_posix()

    rows = {r.path: r for r in manifest}
    rows.update({norm(r.path): r for r in manifest})
    out, n_missing = [], 0
    for p in preds:
        r = rows.get(p.path) or rows.get(norm(p.path))
        if r is None:
            n_missing += 1
            out.append(p)
            continue
        extra = {"group": r.group, "split": r.split, "audio_label": str(r.audio_label),
                 "video_label": str(r.video_label), **dict(r.extra), **p.extra}
        out.append(dataclasses.replace(p, label=p.label if p.label is not None else int(r.label),
                                       category=p.category or r.category, extra=extra))
    if n_missing:
        log.warning("%d of %d predictions have no row in the manifest", n_missing, len(preds))
    return out, n_missing


@dataclass
class Evaluation:
    """Metrics of one prediction set.

    Attributes:
        name: what was evaluated (file or run name).
        level: "video" or "clip".
        description: how the scores were made (windows, aggregation, split).
        coverage: :func:`havic.metrics.coverage` of all rows.
        overall: :func:`havic.metrics.binary_metrics` of the scored, labelled rows.
        groups: column -> group -> :func:`havic.metrics.group_metrics` fields.
        n_unlabelled: scored rows without a label (left out of the metrics).
        threshold: decision threshold of ACC.
    """

    name: str
    level: str
    description: str
    coverage: dict[str, Any]
    overall: dict[str, Any]
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    n_unlabelled: int = 0
    threshold: float = 0.5

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _group_value(p: VideoPrediction, column: str) -> str:
    return p.category if column == "category" else p.extra.get(column, "")


def _describe(preds: Sequence[VideoPrediction], level: str) -> str:
    if level == "clip":
        return ("clip level: one score per cached clip (videos that failed preprocessing are in the cache's "
                "failures.csv, not here)")
    scored = [p for p in preds if not p.error]
    aggs = sorted({p.aggregate for p in scored}) or ["mean"]
    windows = sorted({p.window_s for p in scored}) or [3.2]
    return (f"video level: sliding windows of {', '.join(f'{w:g}' for w in windows)} s, "
            f"video logit = {'/'.join(aggs)} of the window logits")


def evaluate(preds: Sequence[VideoPrediction], by: Sequence[str] = ("category",), threshold: float = 0.5,
             name: str = "", level: str = "video") -> Evaluation:
    """Coverage, overall metrics and per-group metrics of a prediction set.

    Args:
        preds: every row, failed ones included (they count in the coverage).
        by: grouping columns (``category`` or any manifest column carried in ``extra``).
        threshold: ACC threshold on the probability.
        name: label of the set in reports.
        level: "video" or "clip" (labels the report).
    """
    scored = [p for p in preds if not p.error and p.score is not None]
    labelled = [p for p in scored if p.label in (0, 1)]
    labels = [int(p.label) for p in labelled]  # type: ignore[arg-type]
    scores = [float(p.score) for p in labelled]  # type: ignore[arg-type]
    overall = binary_metrics(labels, scores, threshold)
    if not labelled and scored:
        overall["note"] = "no labels: give a manifest (--manifest) to join them by path"
    groups = {}
    for column in by:
        values = [_group_value(p, column) for p in labelled]
        if labelled and any(values):
            groups[column] = group_metrics(labels, scores, values, threshold)
    return Evaluation(name=name, level=level, description=_describe(preds, level),
                      coverage=coverage([p.error for p in preds]), overall=overall, groups=groups,
                      n_unlabelled=len(scored) - len(labelled), threshold=threshold)


@dataclass
class RunSet:
    """Evaluations by method, one per run (e.g. seed), sharing groupings, threshold and manifest.

    Attributes:
        by: grouping columns; threshold: ACC threshold; manifest: rows joined into video-level
            predictions by path (:func:`join_manifest`), or None.
        runs: method -> its evaluations, as :func:`summarize_runs` and :func:`write_report` take them.
    """

    by: Sequence[str]
    threshold: float
    manifest: Sequence[Any] | None = None
    runs: dict[str, list[Evaluation]] = field(default_factory=dict)

    def add(self, method: str, name: str, preds: Sequence[VideoPrediction], level: str = "video") -> Evaluation:
        """Evaluate `preds` as one run of `method` (see :func:`evaluate`)."""
        if self.manifest is not None and level == "video":
            preds, _ = join_manifest(preds, self.manifest)
        result = evaluate(preds, self.by, self.threshold, name=name, level=level)
        self.runs.setdefault(method, []).append(result)
        return result


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _coverage_line(c: Mapping[str, Any]) -> str:
    reasons = ", ".join(f"{r} {n}" for r, n in c["failed_by_reason"].items())
    return f"scored {c['n_scored']} of {c['n']} videos; failed {c['n_failed']}" + (f" ({reasons})" if reasons else "")


def format_evaluation(ev: Evaluation) -> str:
    """A markdown section: title, coverage, and one table (overall, then every group)."""
    title = "Video-level" if ev.level == "video" else "Clip-level"
    lines = [f"### {title} metrics: {ev.name}" if ev.name else f"### {title} metrics", "",
             f"{ev.description}; ACC at threshold {ev.threshold:g}; fake = positive class; values in %.", "",
             f"Coverage: {_coverage_line(ev.coverage)}."]
    if ev.n_unlabelled:
        lines.append(f"{ev.n_unlabelled} scored videos have no label and are not in the metrics.")
    lines += ["", "| set | videos | fake | real | ACC | AP | AUC | AP/AUC on | note |",
              "|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, m: Mapping[str, Any]) -> str:
        ranked = m.get("n_ranked", m["n"] if m["auc"] is not None else 0)
        return (f"| {name} | {m['n']} | {m['n_pos']} | {m['n_neg']} | {_pct(m['acc'])} | {_pct(m['ap'])} | "
                f"{_pct(m['auc'])} | {ranked} | {m['note']} |")

    lines.append(row("all", ev.overall))
    for column, groups in ev.groups.items():
        lines += [row(f"{column}={g}", m) for g, m in groups.items()]
    return "\n".join(lines) + "\n"


def summarize_runs(runs: Mapping[str, Sequence[Evaluation]], by: str = "category") -> tuple[str, dict[str, Any]]:
    """Mean ± standard deviation over runs (seeds) per method, as a markdown table of the paper's layout.

    Rows are methods, columns ACC / AP / AUC overall, then ACC / AP / AUC of every group of the
    column `by` (a fake group's AP/AUC pairs its fakes with all reals, see
    :func:`havic.metrics.group_metrics`). The standard deviation is the sample one (ddof=1); a
    method with a single run shows its value alone.

    Returns:
        (markdown, {method: {"overall" | "<by>=<group>": {metric: mean_std fields}}, "n_runs": ...}).
    """
    groups = sorted({g for evs in runs.values() for ev in evs for g in ev.groups.get(by, {})})
    columns = [("overall", m) for m in METRICS] + [(f"{by}={g}", m) for g in groups for m in METRICS]
    table: dict[str, Any] = {}
    header = "| method | runs | " + " | ".join(f"{s if s == 'overall' else s.split('=', 1)[1]} {m.upper()}"
                                             for s, m in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for method, evs in runs.items():
        stats: dict[str, Any] = {"n_runs": len(evs), "coverage": [ev.coverage for ev in evs]}
        cells = []
        for section, metric in columns:
            if section == "overall":
                values = [ev.overall[metric] for ev in evs]
            else:
                g = section.split("=", 1)[1]
                values = [ev.groups.get(by, {}).get(g, {}).get(metric) for ev in evs]
            ms = mean_std(values)
            stats.setdefault(section, {})[metric] = ms
            if ms["mean"] is None:
                cells.append("—")
            elif ms["std"] is None:
                cells.append(_pct(ms["mean"]))
            else:
                cells.append(f"{_pct(ms['mean'])} ± {_pct(ms['std'])}")
        table[method] = stats
        lines.append(f"| {method} | {len(evs)} | " + " | ".join(cells) + " |")
    levels = sorted({ev.level for evs in runs.values() for ev in evs})
    notes = [
        "",
        f"Values in %, {'/'.join(levels)} level; mean ± sample standard deviation (ddof=1) over the runs "
        "(one value: a single run). Per-group AP/AUC of a group holding only fakes: its fakes against all "
        "reals of the set.",
    ]
    for method, evs in runs.items():
        notes.append(f"- {method}: " + "; ".join(f"{ev.name}: {_coverage_line(ev.coverage)}" for ev in evs))
    return "\n".join(lines + notes) + "\n", table


def score_clips(model: nn.Module, cfg: DictConfig, cache_dir: str | Path, split: str | None,
                batch_size: int | None = None, device: str | torch.device = "cpu",
                precision: str | None = None) -> list[VideoPrediction]:
    """Clip-level scores: every clip of a cache split through the detector (no augmentation).

    Clips without audio go through the auxiliary video head (as in video-level inference).
    ``batch_size`` (clips per forward pass) and ``precision`` default to ``infer.batch_size`` and
    ``infer.precision``; precision as in :class:`havic.inference.VideoScorer` (bf16/fp16 change
    ``model`` in place).

    Returns:
        One row per clip: ``path`` = ``<video path>#clip<k>``, its label, category and the
        manifest's group and split, score = sigmoid(logit); flagged ``untrained_heads`` when
        the detector's heads were never trained (:func:`havic.checkpoints.load_detector`).
    """
    from torch.utils.data import DataLoader

    from havic.data.cache import ClipCache
    from havic.data.datasets import ClipDataset

    batch_size = int(cfg.infer.batch_size if batch_size is None else batch_size)
    precision = cfg.infer.precision if precision is None else precision
    cache = ClipCache(cache_dir)
    data = ClipDataset.from_config(cfg, cache, cache.records(split), require_audio=False)
    device = torch.device(device)
    untrained = ["untrained_heads"] if not getattr(model, "heads_trained", True) else []
    model = prepare_for_inference(model, precision, device)
    logits = torch.empty(len(data))
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0):
        video, audio, has_audio = batch["video"].to(device), batch["audio"].to(device), batch["has_audio"]
        index = batch["index"]
        with torch.inference_mode(), autocast(device.type, precision):
            for mask, with_audio in ((has_audio, True), (~has_audio, False)):
                if mask.any():
                    out = model(video[mask], audio[mask] if with_audio else None)
                    logits[index[mask]] = out.logit.float().cpu()
    rows = []
    for r, x in zip(data.records, logits.tolist()):
        rows.append(VideoPrediction(
            path=f"{r.path}#clip{r.clip}", score=sigmoid(x), logit=x, label=r.label, n_windows=1,
            window_starts=[r.start_s], window_logits=[x], flags=([] if r.has_audio else ["no_audio"]) + untrained,
            window_s=float(cfg.data.clip_seconds), aggregate="clip", category=r.category,
            extra={"group": r.group, "split": r.split, "video": r.path},
        ))
    return rows


def write_report(runs: Mapping[str, Sequence[Evaluation]], out_dir: str | Path, by: str = "category") -> str:
    """Write ``report.md`` (each evaluation, then the summary over runs) and ``metrics.json``, atomically.

    Returns:
        The markdown.
    """
    from havic.utils.io import atomic_write_json, atomic_write_text

    table, stats = summarize_runs(runs, by)
    sections = [format_evaluation(e) for evs in runs.values() for e in evs]
    report = "\n".join(sections) + "\n### Summary over runs\n\n" + table
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "report.md", report)
    atomic_write_json(out_dir / "metrics.json",
                      {"runs": {m: [e.to_json() for e in evs] for m, evs in runs.items()}, "summary": stats})
    return report
