"""SSR-DFD linear probes on stored features: train, evaluate, the train-on-X-test-on-Y matrix, late fusion.

    havic probe train STORE --feature havic/video/12 --out runs/probe-v12
    havic probe evaluate STORE --probe runs/probe-v12/probe.safetensors --feature havic/video/12 --out eval/
    havic probe matrix --dataset favc=FAVC_STORE av1m=AV1M_STORE avlips=AVLIPS_STORE \\
        --train-on favc av1m --feature havic/video/12 havic/audio/12 --ssr-binary favc av1m --out runs/matrix
    havic probe fuse runs/a/scores.csv runs/b/scores.csv --out runs/fusion
    havic probe silence-audit STORE --probe runs/probe-a12/probe.safetensors --feature havic/audio/12 \\
        --root /data/av1m --out runs/silence

STORE is a feature store written by ``havic extract-features``; a dataset may name its manifest
after a comma (``favc=STORE,favc.csv``) for audio/video labels and splits (needed by
--ssr-binary), else the store index gives label and split. A feature ``A+B`` is the early fusion
of two sequences. The probe is the paper's by default (L2 norm, linear head, LSE, Adam 1e-3,
batch 1, <= 100 epochs, patience 10, seed 43). Outputs: metrics.json, scores.csv (video_id,
label, score, p_fake, num_frames), probe.safetensors; the matrix also writes matrix.md and
matrix.png, and fuse writes fusion.md and correlation.png. silence-audit scores the videos with
their features and with the rows of their leading silence cut (havic.analysis.audits: first
sample above 5e-4, floor(silence x 25) + 1 frames at 25 fps; the media are read from --root for
the silence) and writes scores.csv, scores_trimmed.csv and the AUC drop.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path
from typing import Any

from havic.cli._common import default_out_dir, fail, make_parser

POOLING_CHOICES = ("lse", "lme", "mean", "max")


def _probe_options(p: argparse.ArgumentParser, rows: bool = False) -> None:
    p.add_argument("--feature", required=True, nargs="+" if rows else None,
                   help="sequence name(s) in the store, one matrix row each (A+B: early fusion)" if rows else
                   "sequence name in the store (A+B: early fusion)")
    p.add_argument("--head", choices=("linear", "transformer"), default="linear", help="per-frame head")
    p.add_argument("--pooling", choices=POOLING_CHOICES, default="lse", help="temporal pooling of frame logits")
    p.add_argument("--batch-size", type=int, default=1, help="videos per step (padded batches score as batch 1)")
    p.add_argument("--max-epochs", type=int, default=100, help="epoch cap")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience on val loss")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=43, help="seed of initialisation and shuffling")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train a probe on a store's train (and val) videos, test on its test videos")
    t.add_argument("store", type=Path, help="feature store folder")
    t.add_argument("--manifest", type=Path, help="manifest of the stored videos (labels, splits)")
    t.add_argument("--ssr-binary", action="store_true", help="RVRA vs FVFA only (needs --manifest)")
    t.add_argument("--out", type=Path, help="output folder (default: runs/probe-<timestamp>)")
    _probe_options(t)
    e = sub.add_parser("evaluate", help="score a store's videos with a probe (ours or SSR-DFD's .ckpt)")
    e.add_argument("store", type=Path, help="feature store folder")
    e.add_argument("--probe", type=Path, required=True, help="probe.safetensors, or a released SSR-DFD .ckpt")
    e.add_argument("--feature", required=True, help="sequence name in the store (A+B: early fusion)")
    e.add_argument("--manifest", type=Path, help="manifest of the stored videos (labels, splits)")
    e.add_argument("--split", default="test", help="which videos: train, val, test or all")
    e.add_argument("--ssr-binary", action="store_true", help="RVRA vs FVFA only (needs --manifest)")
    e.add_argument("--out", type=Path, help="output folder (default: runs/probe-<timestamp>)")
    m = sub.add_parser("matrix", help="train on each dataset, test on every dataset (SSR-DFD Table 2 layout)")
    m.add_argument("--dataset", nargs="+", required=True, metavar="NAME=STORE[,MANIFEST]",
                   help="datasets (favc, av1m, avlips, dfe give the Table 2 columns)")
    m.add_argument("--random-init", nargs="+", default=[], metavar="NAME=STORE[,MANIFEST]",
                   help="stores of the random-initialisation twin of the extractor: one shortcut-baseline row per feature")
    m.add_argument("--train-on", nargs="+", required=True, metavar="NAME", help="datasets to train on")
    m.add_argument("--test-on", nargs="+", metavar="NAME", help="datasets to test on (default: all)")
    m.add_argument("--ssr-binary", nargs="+", default=[], metavar="NAME", help="datasets restricted to RVRA vs FVFA")
    m.add_argument("--modality", default="", help="modality column of the rows")
    m.add_argument("--out", type=Path, help="output folder (default: runs/probe-<timestamp>)")
    _probe_options(m, rows=True)
    f = sub.add_parser("fuse", help="late fusion and score correlations of probes' per-video scores")
    f.add_argument("scores", type=Path, nargs="+", help="scores.csv files of probes on the same test videos")
    f.add_argument("--names", nargs="+", help="model names (default: the parent folder of each CSV)")
    f.add_argument("--out", type=Path, help="output folder (default: runs/probe-<timestamp>)")
    s = sub.add_parser("silence-audit", help="AUC with and without the leading silence (AVH-Align's trimmed mode)")
    s.add_argument("store", type=Path, help="feature store folder")
    s.add_argument("--probe", type=Path, required=True, help="probe.safetensors, or a released SSR-DFD .ckpt")
    s.add_argument("--feature", required=True, help="sequence name in the store (A+B: early fusion)")
    s.add_argument("--root", type=Path, required=True, help="folder the stored video paths are relative to")
    s.add_argument("--manifest", type=Path, help="manifest of the stored videos (labels, splits)")
    s.add_argument("--split", default="test", help="which videos: train, val, test or all")
    s.add_argument("--out", type=Path, help="output folder (default: runs/probe-<timestamp>)")
    return p.parse_args(argv)


def _config(args: argparse.Namespace) -> Any:
    from havic.analysis.training import ProbeConfig

    return ProbeConfig(head=args.head, pooling=args.pooling, lr=args.lr, max_epochs=args.max_epochs,
                       patience=args.patience, batch_size=args.batch_size, seed=args.seed)


def _rows(store: Path, manifest: Path | None, binary: bool) -> list[Any]:
    from havic.analysis.inputs import store_rows
    from havic.analysis.protocols import ssr_binary

    if binary and manifest is None:
        raise ValueError("--ssr-binary needs the manifest (audio and video labels): give it")
    rows = store_rows(store, manifest)
    return ssr_binary(rows) if binary else rows


def _dataset_spec(item: str) -> tuple[str, Path, Path | None]:
    name, eq, rest = item.partition("=")
    if not eq or not name or not rest:
        raise ValueError(f"dataset {item!r}: expected NAME=STORE[,MANIFEST]")
    store, _, manifest = rest.partition(",")
    return name, Path(store), Path(manifest) if manifest else None


def _audits(rows: list[Any], videos: list[Any]) -> dict[str, Any]:
    from havic.analysis.audits import length_audit

    by_path = {r.path: r for r in rows}
    durations = [by_path[v.video_id].extra.get("duration_s", "") for v in videos]
    seconds = [float(d) for d in durations] if all(d not in ("", None) for d in durations) else None
    return length_audit([v.label for v in videos], seconds, [len(v.frame_logits) for v in videos])


def run_train(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from havic.analysis.inputs import load_features
    from havic.analysis.protocols import carve_val, labels_of
    from havic.analysis.reports import write_scores_csv
    from havic.analysis.ssr_checkpoint import save_probe
    from havic.analysis.training import SequenceSet, score_probe, train_probe
    from havic.metrics import binary_metrics

    rows = carve_val(_rows(args.store, args.manifest, args.ssr_binary), seed=args.seed)
    feats = load_features(args.store, args.feature, [r.path for r in rows])
    config = _config(args)
    probe, info = train_probe(SequenceSet(feats, labels_of(rows, "train")), SequenceSet(feats, labels_of(rows, "val")),
                              config, out_dir=out / "lightning")
    modality = next(iter(feats.values())).modality
    save_probe(out / "probe.safetensors", probe, modality, feature=args.feature, training=info)
    test = labels_of(rows, "test")
    videos = score_probe(probe, feats, test)
    write_scores_csv(videos, out / "scores.csv")
    return {"feature": args.feature, "training": info, "settings": vars(config),
            "test": binary_metrics([v.label for v in videos], [v.score for v in videos], threshold=0.0),
            "not_scored": sorted(set(test) - {v.video_id for v in videos}),
            "length_audit": _audits(rows, videos) if videos else None}


def run_evaluate(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from havic.analysis.inputs import load_features
    from havic.analysis.protocols import labels_of
    from havic.analysis.reports import write_scores_csv
    from havic.analysis.ssr_checkpoint import load_probe
    from havic.analysis.training import score_probe
    from havic.metrics import binary_metrics

    loaded = load_probe(args.probe)
    rows = _rows(args.store, args.manifest, args.ssr_binary)
    labels = labels_of(rows, None if args.split == "all" else args.split)
    if not labels:
        raise ValueError(f"{args.store}: no videos in split {args.split!r}")
    feats = load_features(args.store, args.feature, list(labels))
    dim = next(iter(feats.values())).dim
    if dim != loaded.feats_dim:
        raise ValueError(f"{args.probe}: the probe reads {loaded.feats_dim}-d features, {args.feature!r} is {dim}-d")
    videos = score_probe(loaded.probe, feats, labels)
    write_scores_csv(videos, out / "scores.csv")
    return {"feature": args.feature, "probe": str(args.probe), "input_type": loaded.input_type, "split": args.split,
            "metrics": binary_metrics([v.label for v in videos], [v.score for v in videos], threshold=0.0),
            "not_scored": sorted(set(labels) - {v.video_id for v in videos}),
            "length_audit": _audits(rows, videos)}


def run_matrix(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from havic.analysis.inputs import load_features
    from havic.analysis.protocols import matrix_columns, run_matrix
    from havic.analysis.reports import matrix_as_dict, matrix_heatmap, matrix_markdown, write_markdown, write_scores_csv

    specs = dict((n, (s, m)) for n, s, m in map(_dataset_spec, args.dataset))
    twins = dict((n, (s, m)) for n, s, m in map(_dataset_spec, args.random_init))
    test_on = args.test_on or list(specs)
    unknown = sorted((set(args.train_on) | set(test_on) | set(args.ssr_binary) | set(twins)) - set(specs))
    if unknown:
        raise ValueError(f"dataset(s) {unknown} are not among --dataset {sorted(specs)}")
    config, rows_out = _config(args), []
    for feature in args.feature:
        for sources, of in ((specs, None), (twins, feature)):
            if not sources:
                continue
            data = {}
            for name, (store, manifest) in sources.items():
                rows = _rows(store, manifest, name in args.ssr_binary)
                data[name] = (load_features(store, feature, [r.path for r in rows]), rows)
            missing = sorted((set(args.train_on) | set(test_on)) - set(data))
            if missing:
                raise ValueError(f"--random-init lacks dataset(s) {missing}")
            row, scored = run_matrix(feature, data, args.train_on, test_on, config, args.modality, of)
            rows_out.append(row)
            for (x, y), videos in scored.items():
                folder = feature.replace("/", "_") + ("_random_init" if of else "")
                write_scores_csv(videos, out / "scores" / folder / f"{x}-{y}.csv")
    columns = matrix_columns(args.train_on, test_on)
    write_markdown(matrix_markdown(rows_out, columns), out / "matrix.md")
    matrix_heatmap(rows_out, columns, out / "matrix.png")
    print(matrix_markdown(rows_out, columns))
    return {"settings": vars(config), **matrix_as_dict(rows_out, columns)}


def _read_scores(path: Path) -> tuple[dict[str, float], dict[str, int]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"video_id", "label", "score"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a scores.csv with video_id, label, score columns")
    return {r["video_id"]: float(r["score"]) for r in rows}, {r["video_id"]: int(r["label"]) for r in rows}


def run_fuse(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from havic.analysis.fusion import fusion_study
    from havic.analysis.reports import square_heatmap, write_markdown

    names = args.names or [p.parent.name for p in args.scores]
    if len(names) != len(args.scores) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per scores file, got {names}")
    scores, labels = {}, {}
    for name, path in zip(names, args.scores):
        scores[name], lab = _read_scores(path)
        labels.update(lab)
    study = fusion_study(scores, labels, names)
    square_heatmap(study["pearson"], names, out / "correlation.png", "Pearson correlation of scores")
    pct = lambda x: "—" if x is None else f"{100 * x:.1f}"  # noqa: E731
    lines = ["| row \\ fused with | AUC | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for i, n in enumerate(names):
        gains = [pct(study["gain"][i][j]) if i != j else "—" for j in range(len(names))]
        lines.append(f"| {n} | {pct(study['auc'][n])} | " + " | ".join(gains) + " |")
    text = "Relative gain of late fusion, (AUC_fused - AUC_row) / AUC_row, in %.\n\n" + "\n".join(lines) + "\n"
    write_markdown(text, out / "fusion.md")
    print(text)
    return study


def run_silence_audit(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from havic.analysis.audits import leading_silence_s, silence_audit, trim_counts, trim_sequence
    from havic.analysis.inputs import load_features
    from havic.analysis.protocols import labels_of
    from havic.analysis.reports import write_scores_csv
    from havic.analysis.ssr_checkpoint import load_probe
    from havic.analysis.training import score_probe
    from havic.data.errors import MediaError
    from havic.data.video import read_audio

    loaded = load_probe(args.probe)
    labels = labels_of(_rows(args.store, args.manifest, False), None if args.split == "all" else args.split)
    if not labels:
        raise ValueError(f"{args.store}: no videos in split {args.split!r}")
    feats = load_features(args.store, args.feature, list(labels))
    silence, trimmed = {}, {}
    for path in labels:
        try:
            wav = read_audio(args.root / path)
        except MediaError as err:
            raise ValueError(f"{args.root / path}: {err}") from None
        if wav is None:
            raise ValueError(f"{args.root / path}: no audio stream, no leading silence to measure")
        silence[path] = leading_silence_s(wav, 16000)
        trimmed[path] = trim_sequence(feats[path], trim_counts(silence[path])[0])
    full_videos, trim_videos = score_probe(loaded.probe, feats, labels), score_probe(loaded.probe, trimmed, labels)
    extra = {"leading_silence_s": {k: f"{v:.4f}" for k, v in silence.items()}}
    write_scores_csv(full_videos, out / "scores.csv", extra)
    write_scores_csv(trim_videos, out / "scores_trimmed.csv", extra)
    audit = silence_audit(labels, {v.video_id: v.score for v in full_videos},
                          {v.video_id: v.score for v in trim_videos})
    pct = lambda x: "—" if x is None else f"{100 * x:.1f}"  # noqa: E731
    print(f"AUC full {pct(audit['auc_full'])}, trimmed {pct(audit['auc_trimmed'])}, drop {pct(audit['auc_drop'])} "
          f"(%, {audit['n']} videos)")
    return {"feature": args.feature, "probe": str(args.probe), "split": args.split, **audit}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from havic.analysis.reports import write_metrics
    from havic.checkpoints.files import CheckpointError

    out = args.out or default_out_dir("probe")
    run = {"train": run_train, "evaluate": run_evaluate, "matrix": run_matrix, "fuse": run_fuse,
           "silence-audit": run_silence_audit}[args.action]
    try:
        result = run(args, out)
    except (ValueError, KeyError, FileNotFoundError, CheckpointError) as err:
        return fail(err.args[0] if isinstance(err, KeyError) and err.args else err)
    write_metrics(result, out / "metrics.json")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
