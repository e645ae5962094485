"""Probe weights on disk: the Lightning checkpoints SSR-DFD released, and this project's safetensors export.

SSR-DFD's released probes (bit-ml/ssr-dfd ``linear_probing/checkpoints/*``) are Lightning ``.ckpt``
files whose ``state_dict`` holds exactly ``head.weight`` (1, D) and ``head.bias`` (1,) and whose
``hyper_parameters.config.model_hparams`` holds ``input_type`` (audio / video / multimodal) and
``feats_dim`` (D). They are read with ``torch.load(weights_only=True)`` and loaded strictly: any
other key, shape or dimension is an error. Ours are written as safetensors with the same two
tensors for a linear head and the settings in the metadata (:data:`PROBE_FORMAT`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from havic.analysis.probes import FrameProbe
from havic.checkpoints.files import CheckpointError, read_safetensors_metadata, save_safetensors

__all__ = ["PROBE_FORMAT", "ProbeFile", "load_probe", "load_ssr_probe", "save_probe"]

PROBE_FORMAT = "havic-probe-1"
SSR_KEYS = ("head.bias", "head.weight")
INPUT_TYPES = ("audio", "video", "multimodal")


@dataclass
class ProbeFile:
    """A probe read from disk.

    Attributes:
        probe: the network, in eval mode.
        input_type: ``audio`` / ``video`` / ``multimodal`` (SSR-DFD's names) or a modality.
        feats_dim: D.
        settings: everything else stored with it (pooling, head, feature name, ...).
    """

    probe: FrameProbe
    input_type: str
    feats_dim: int
    settings: dict[str, Any] = field(default_factory=dict)


def load_ssr_probe(path: str | os.PathLike) -> ProbeFile:
    """Loads a probe released by SSR-DFD (a Lightning checkpoint), strictly.

    Raises:
        CheckpointError: missing or unreadable file, pickled objects other than plain data, keys
            other than ``head.weight`` / ``head.bias``, shapes that disagree with ``feats_dim``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types; one line either way
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not readable with weights_only=True ({first[:200]})") from None
    sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or tuple(sorted(sd)) != SSR_KEYS:
        found = sorted(sd) if isinstance(sd, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an SSR-DFD linear probe: state_dict keys {found}, expected {list(SSR_KEYS)}")
    try:
        hparams = ckpt["hyper_parameters"]["config"]["model_hparams"]
        input_type, dim = str(hparams["input_type"]), int(hparams["feats_dim"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: no hyper_parameters.config.model_hparams.{{input_type, feats_dim}}") from None
    w, b = sd["head.weight"], sd["head.bias"]
    if tuple(w.shape) != (1, dim) or tuple(b.shape) != (1,):
        raise CheckpointError(f"{path}: head.weight {tuple(w.shape)} / head.bias {tuple(b.shape)} do not fit "
                              f"feats_dim {dim}; expected (1, {dim}) and (1,)")
    if input_type not in INPUT_TYPES:
        raise CheckpointError(f"{path}: input_type {input_type!r} is not one of {INPUT_TYPES}")
    probe = FrameProbe(dim)  # the paper's settings: L2 norm, linear head, LSE
    probe.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return ProbeFile(probe.eval(), input_type, dim, {"source": "ssr-dfd", "pooling": "lse", "head": "linear",
                                                      "l2_normalize": True})


def save_probe(path: str | os.PathLike, probe: FrameProbe, input_type: str, **settings: Any) -> None:
    """Writes a probe as safetensors; a linear probe has SSR-DFD's keys, so its tensors are theirs.

    Args:
        path: the ``.safetensors`` file.
        probe: the probe.
        input_type: what it reads (``audio`` / ``video`` / ``multimodal``, or a modality name).
        settings: JSON-serialisable extras kept in the metadata (feature name, training info, ...).
    """
    meta = {"format": PROBE_FORMAT, "input_type": input_type, "feats_dim": str(probe.dim), "head": probe.head_kind,
            "pooling": probe.pooling, "l2_normalize": json.dumps(probe.l2_normalize),
            "head_options": json.dumps(probe.head_options), "settings": json.dumps(settings, sort_keys=True)}
    save_safetensors(path, {k: v.clone() for k, v in probe.state_dict().items()}, meta)


def load_probe(path: str | os.PathLike) -> ProbeFile:
    """Loads a probe written by :func:`save_probe` (``.safetensors``) or released by SSR-DFD (``.ckpt``)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return load_ssr_probe(path)
    from havic.checkpoints.files import load_state_dict_file

    meta = read_safetensors_metadata(path)
    if meta.get("format") != PROBE_FORMAT:
        raise CheckpointError(f"{path}: not a probe file (metadata format {meta.get('format')!r}, "
                              f"expected {PROBE_FORMAT!r})")
    probe = FrameProbe(int(meta["feats_dim"]), meta["head"], meta["pooling"], json.loads(meta["l2_normalize"]),
                       **json.loads(meta["head_options"]))
    try:
        probe.load_state_dict(load_state_dict_file(path), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the stored settings ({str(err).splitlines()[0]})") from None
    return ProbeFile(probe.eval(), meta["input_type"], probe.dim, json.loads(meta["settings"]))
