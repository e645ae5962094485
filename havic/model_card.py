"""A folder to publish a model from: weights, configuration and a model card (``havic export``).

:func:`export_model` writes what a Hugging Face model repository needs, and nothing is uploaded:

* ``model.safetensors``: this project's weights file (the resolved configuration in its metadata),
  the name ``hf://ORG/REPO`` reads by default (:mod:`havic.checkpoints.hub`);
* ``config.yaml``: the same configuration, readable;
* ``README.md``: the model card, YAML front matter (licence, tags, library) then how to use the
  model, the evaluation of ``havic evaluate`` when its ``metrics.json`` is given, and the settings;
* ``metrics.json``: a copy of the evaluation the card quotes, when given.

Upload the folder with the Hugging Face CLI: ``hf upload ORG/REPO FOLDER``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from havic.checkpoints import (
    CheckpointError, HavicWeights, is_hub_id, load_detector, read_weights, resolve_weights, save_weights,
)
from havic.checkpoints.files import detector_heads
from havic.config import save_config
from havic.utils.io import atomic_write_json, atomic_write_text
from havic.version import __version__

__all__ = ["MetricRow", "export_model", "metric_rows", "model_card", "read_export_source"]

PAPER_URL = "https://arxiv.org/abs/2603.23960"
OFFICIAL_CODE_URL = "https://github.com/tuffy-studio/HAVIC"
LICENSE = "mit"
TAGS = ("deepfake-detection", "audio-visual", "video-classification", "havic", "pytorch")
WEIGHTS_NAME = "model.safetensors"


@dataclass
class MetricRow:
    """One line of the card's evaluation table (values in [0, 1]; None where undefined)."""

    evaluation: str
    level: str
    group: str
    n: int
    acc: float | None
    ap: float | None
    auc: float | None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100.0 * x:.2f}"


def metric_rows(metrics: Mapping[str, Any], source: str = "metrics") -> list[MetricRow]:
    """The rows of a ``havic evaluate`` ``metrics.json``: every evaluation, overall then per group.

    Accepts the file's ``{"runs": {method: [evaluation, ...]}}`` form or one evaluation
    (``{"overall": ..., "groups": ...}``).

    Raises:
        ValueError: neither form (the message names `source`).
    """
    if isinstance(metrics.get("runs"), Mapping):
        runs = metrics["runs"]
    elif isinstance(metrics.get("overall"), Mapping):
        runs = {str(metrics.get("name", "")): [metrics]}
    else:
        raise ValueError(f"{source}: not a havic evaluation (no 'runs' or 'overall'); give the metrics.json "
                         "that `havic evaluate --out-dir` writes")
    rows = []
    for method, evaluations in runs.items():
        for i, ev in enumerate(evaluations):
            name = method if len(evaluations) == 1 else f"{method} #{i + 1}"
            level = str(ev.get("level", ""))
            groups = [("all", ev["overall"])]
            for column, values in ev.get("groups", {}).items():
                groups += [(f"{column}={g}", m) for g, m in values.items()]
            rows += [MetricRow(name, level, g, int(m.get("n", 0)), m.get("acc"), m.get("ap"), m.get("auc"))
                     for g, m in groups]
    return rows


def _settings(cfg: DictConfig, kind: str, n_params: int) -> list[tuple[str, str]]:
    m, d, inf, tr = cfg.model, cfg.data, cfg.infer, cfg.train
    init = Path(tr.init_from).name if tr.init_from else "none (trained from scratch)"
    rows = [
        ("network", f"{'detector' if kind == 'detector' else 'pretrainer'}, variant `{m.variant}`, "
                    f"{n_params:,} parameters"),
        ("encoders", f"width {m.dim}, depth {m.depth}, {m.num_heads} heads, taps {list(m.taps)}, "
                     f"{m.num_segments} segments"),
        ("video input", f"{m.video.num_frames} face crops of {m.video.image_size} px at {d.fps:g} fps "
                        f"({d.clip_seconds:g} s clips)"),
        ("audio input", f"{m.audio.num_frames} x {m.audio.num_mel_bins} log-mel fbank, "
                        f"{d.audio.sample_rate} Hz, length policy `{d.audio.length_policy}`"),
        ("faces", f"`{d.face.detector}` detector, crop margin {d.face.margin:g}"),
    ]
    if kind == "detector":
        rows.append(("scoring", f"{d.clip_seconds:g} s windows every {inf.hop_s:g} s, video logit = "
                                f"`{inf.aggregate}` of the window logits, fake when sigmoid >= {inf.threshold:g}"))
    rows += [("training", f"stage `{tr.stage}`, initial weights {init}, max_epochs {tr.trainer.max_epochs}, "
                          f"lr {tr.lr:g}, schedule `{tr.schedule}`, seed {cfg.seed}")]
    return rows


def _front_matter() -> str:
    """The metadata block the Hub reads: licence, library and tags."""
    return "\n".join(["---", f"license: {LICENSE}", "library_name: havic", "tags:", *[f"- {t}" for t in TAGS],
                      "---", ""])


def model_card(cfg: DictConfig, kind: str, *, n_params: int, rows: Sequence[MetricRow] = (),
               repo_id: str | None = None, source: str = "", untrained_heads: bool = False) -> str:
    """The model card (``README.md``) of exported weights.

    Args:
        cfg: the weights' resolved configuration.
        kind: "detector" or "pretrain".
        n_params: the number of weight elements.
        rows: the evaluation table (:func:`metric_rows`); empty: no evaluation section.
        repo_id: ``ORG/REPO`` the folder is meant for (used in the examples; default a placeholder).
        source: what was exported (a file name).
        untrained_heads: a detector whose pools and heads were never trained (the card says so).
    """
    hub = f"hf://{repo_id or 'ORG/REPO'}"
    title = repo_id or ("HAVIC detector" if kind == "detector" else "HAVIC pretraining weights")
    what = "deepfake detector" if kind == "detector" else "pretrained audio-visual backbone (no detection heads)"
    out = [_front_matter(), f"# {title}", "",
           f"A HAVIC {what}, variant `{cfg.model.variant}`, exported by havic {__version__}"
           + (f" from `{source}`." if source else "."), "",
           f"HAVIC: *Leave No Stone Unturned: Uncovering Holistic Audio-Visual Intrinsic Coherence for Deepfake "
           f"Detection* (Peng et al., CVPR 2026 Findings), [paper]({PAPER_URL}), "
           f"[official code]({OFFICIAL_CODE_URL}).", ""]
    if untrained_heads:
        out += ["**Its detection heads were never trained** (converted from a pretrainer): its scores mean "
                "nothing until it is fine-tuned, and havic refuses to score with it unless asked "
                "(`--allow-untrained-heads`).", ""]
    out += ["## Use", ""]
    if kind == "detector":
        out += ["```bash", f"havic infer video.mp4 folder_of_videos/ --weights {hub} --out predictions.csv", "```",
                "", "```python", "import havic", "", f'det = havic.load_detector("{hub}")',
                'pred = det.score("video.mp4")      # fake probability, per-window logits, flags',
                "print(pred.score, pred.window_starts, pred.window_logits, pred.flags)", "```", "",
                "The score is the sigmoid of the aggregated window logits; 1 means fake. Faces are found with "
                "the detector named below (`--face-weights` points RetinaFace at FaceX-Zoo's models folder).", ""]
    else:
        out += ["Fine-tune a detector from it:", "", "```bash",
                f"hf download {repo_id or 'ORG/REPO'} {WEIGHTS_NAME} --local-dir checkpoints/",
                f"havic train configs/finetune/fakeavceleb.yaml data.cache_dir=... "
                f"train.init_from=checkpoints/{WEIGHTS_NAME}", "```", ""]
    if rows:
        out += ["## Evaluation", "", "Values in %; AP and AUC rank fakes (positive class) against reals; "
                "a group of fakes only is ranked against all reals of its evaluation (`metrics.json`).", "",
                "| evaluation | level | set | videos | ACC | AP | AUC |", "|---|---|---|---:|---:|---:|---:|"]
        out += [f"| {r.evaluation} | {r.level} | {r.group} | {r.n} | {_pct(r.acc)} | {_pct(r.ap)} | {_pct(r.auc)} |"
                for r in rows]
        out.append("")
    out += ["## Settings", "", "| setting | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in _settings(cfg, kind, n_params)]
    out += ["", "The full configuration is `config.yaml`; the same is stored in the metadata of "
            f"`{WEIGHTS_NAME}`, which havic reads without unpickling anything.", ""]
    return "\n".join(out)


def read_export_source(source: str | os.PathLike, which: str = "best") -> tuple[HavicWeights, str]:
    """The weights to export and a name for them.

    Args:
        source: a training run folder (its ``export/<which>.safetensors``, else
            ``checkpoints/<which>.ckpt``), a weights file or Lightning checkpoint of this project,
            an official HAVIC fine-tuned state dict, or a Hub id of a detector.
        which: "best" or "last", for a run folder.

    Raises:
        havic.checkpoints.CheckpointError: nothing readable there (the message names what was tried).
    """
    hub = is_hub_id(source)
    path = resolve_weights(source)
    if not hub and path.is_dir():
        tried = [path / "export" / f"{which}.safetensors", path / "checkpoints" / f"{which}.ckpt"]
        found = next((p for p in tried if p.is_file()), None)
        if found is None:
            raise CheckpointError(f"{path}: a folder without {tried[0].relative_to(path)} or "
                                  f"{tried[1].relative_to(path)}; give a training run folder or a weights file")
        return read_weights(found), f"{path.name}/{found.relative_to(path)}"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder")
    name = str(source) if hub else path.name
    try:
        return read_weights(path), name
    except CheckpointError:
        if path.suffix == ".safetensors":  # safetensors without havic metadata: nothing else to try
            raise
    model, cfg = load_detector(path)  # an official HAVIC fine-tuned state dict, else an error naming both readings
    return HavicWeights(model.state_dict(), cfg, "detector"), name


def _heads(weights: HavicWeights) -> str | None:
    """The ``heads`` record of the exported file: as :func:`havic.checkpoints.export_checkpoint` decides it."""
    if weights.kind != "detector":
        return None
    return "trained" if detector_heads(weights) == "trained" else "untrained"


def export_model(source: str | os.PathLike, out_dir: str | os.PathLike, *, which: str = "best",
                 metrics: str | os.PathLike | None = None, repo_id: str | None = None) -> dict[str, Path]:
    """Write ``model.safetensors``, ``config.yaml``, ``README.md`` (and ``metrics.json``) into `out_dir`.

    Args:
        source: see :func:`read_export_source`.
        out_dir: the folder to upload (created; other files in it are left alone).
        which: "best" or "last" weights of a run folder.
        metrics: a ``metrics.json`` of ``havic evaluate`` for the card's evaluation table.
        repo_id: the ``ORG/REPO`` the folder is meant for (the card's examples use it).

    Returns:
        File role ("weights", "config", "card", "metrics") -> path written.

    Raises:
        havic.checkpoints.CheckpointError: the source cannot be read.
        ValueError: `metrics` cannot be read or is not a havic evaluation.
    """
    weights, name = read_export_source(source, which)
    rows: list[MetricRow] = []
    data = None
    if metrics is not None:
        try:
            data = json.loads(Path(metrics).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{metrics}: not JSON ({err})") from None
        except OSError as err:
            raise ValueError(f"{metrics}: cannot be read ({err.strerror or err})") from None
        rows = metric_rows(data if isinstance(data, Mapping) else {}, str(metrics))
    out = Path(out_dir)
    heads = _heads(weights)
    meta = {k: v for k, v in weights.metadata.items() if k not in ("format", "heads")}
    meta["source"] = name
    files = {"weights": save_weights(out / WEIGHTS_NAME, weights.state_dict, weights.config, weights.kind,
                                     heads=heads, **meta)}
    save_config(weights.config, out / "config.yaml")
    files["config"] = out / "config.yaml"
    n_params = sum(t.numel() for t in weights.state_dict.values())
    card = model_card(weights.config, weights.kind, n_params=n_params, rows=rows, repo_id=repo_id, source=name,
                      untrained_heads=heads == "untrained")
    files["card"] = atomic_write_text(out / "README.md", card)
    if data is not None:
        files["metrics"] = atomic_write_json(out / "metrics.json", data)
    return files
