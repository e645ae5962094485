"""Checkpoint files: reading a state dict from any file safely, safetensors, and this project's weights.

Files are read with ``torch.load(weights_only=True)`` or safetensors; arbitrary pickled objects are
never unpickled. This project's own files are either a weights file (:func:`save_weights`:
safetensors whose metadata holds the format, the kind of network and the resolved configuration as
JSON) or one of its Lightning checkpoints (the resolved configuration under :data:`CONFIG_KEY`);
:func:`read_weights` reads both.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from omegaconf import DictConfig
from torch import Tensor

from havic.utils.io import atomic_path

__all__ = [
    "CONFIG_KEY", "HEADS", "MODEL_KINDS", "WEIGHTS_FORMAT", "WRAPPER_KEYS", "CheckpointError", "HavicWeights",
    "StateDict", "check_torch_file", "detector_heads", "load_state_dict_file", "read_safetensors_metadata",
    "read_weights", "save_safetensors", "save_weights", "stored_config",
]

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
WEIGHTS_FORMAT = "havic-weights-1"  # safetensors metadata "format" of this project's weights files
CONFIG_KEY = "havic_config"  # where Lightning checkpoints of this project keep the resolved config
MODEL_KINDS = ("pretrain", "detector")
# A detector's "heads" metadata: whether its pools and heads were trained (fine-tuning) or are fresh
# (a conversion from a pretrainer). See detector_heads for files that do not say.
HEADS = ("trained", "untrained")
_STAGE_KIND = {"pretrain": "pretrain", "finetune": "detector"}  # train.stage -> the network it trains


class CheckpointError(ValueError):
    """A checkpoint cannot be read, converted or loaded; the message names the file or the keys."""


def _listing(keys: Iterable[str], limit: int = 30) -> str:
    """The first `limit` keys, comma-separated, and how many more there are (for error messages)."""
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# -- any state dict -----------------------------------------------------------------------------


def _unwrap(obj: Any, path: Path) -> StateDict:
    """Find the state dict inside a loaded object (plain, or under one of :data:`WRAPPER_KEYS`)."""
    found, trail = obj, []
    while isinstance(found, Mapping) and not (found and all(isinstance(v, Tensor) for v in found.values())):
        key = next((k for k in WRAPPER_KEYS if isinstance(found.get(k), Mapping)), None)
        if key is None:
            bad = [f"{k} ({type(v).__name__})" for k, v in found.items() if not isinstance(v, Tensor)]
            what = f"non-tensor entries {_listing(map(str, bad), 10)}" if found else "an empty dict"
            raise CheckpointError(
                f"{path}: no state dict found{' under ' + '.'.join(trail) if trail else ''}: it holds {what}, "
                f"and none of the wrapper keys {list(WRAPPER_KEYS)}"
            )
        found = found[key]
        trail.append(key)
    if not isinstance(found, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found a {type(found).__name__}")
    bad_keys = [k for k in found if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"{path}: state dict keys must be strings, found {bad_keys[:5]}")
    sd = dict(found)
    if all(k.startswith("module.") for k in sd):  # saved from a DataParallel / DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if trail:
        log.info("%s: state dict found under %s", path, ".".join(trail))
    return sd


def _first_sentence(err: BaseException) -> str:
    """The first sentence of an error's first line (torch and safetensors errors run over many lines)."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")


def _torch_load(path: Path, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``; refused objects and damaged files become one-line CheckpointErrors.

    The message names the refused global (torch words it differently across versions) and never
    suggests unpickling the file in full.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{path}: refused: the file holds a pickled {found.group(1)} object, and only tensors, numbers, "
                "strings and plain containers are read (weights_only=True); ask for a .safetensors or a "
                "tensors-only state dict") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = detail.group(1).strip() if detail else _first_sentence(err)
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint, truncated or damaged "
                              f"({_first_sentence(err)})") from None


def check_torch_file(path: str | os.PathLike) -> None:
    """Check that a torch checkpoint opens with ``weights_only=True`` (tensors memory-mapped, not read).

    For files another library loads later (``train.resume``, which Lightning reads): a refused or
    damaged file is reported here, in one line, instead of deep inside that library.

    Raises:
        CheckpointError: missing, damaged, or holding pickled objects other than plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        _torch_load(path, mmap=True)
    except CheckpointError as err:
        if "mmap" not in str(err):
            raise
        _torch_load(path)  # legacy (non-zip) files cannot be memory-mapped


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Read a state dict from a ``.safetensors`` file or a torch checkpoint, tensors only.

    Torch files are read with ``weights_only=True``: tensors, numbers, strings and plain containers
    are accepted, any other pickled object is refused. The state dict may be wrapped under
    ``model`` / ``state_dict`` / ``model_state_dict`` (also nested) and prefixed with ``module.``.

    Args:
        path: the checkpoint file.

    Returns:
        Parameter name -> tensor, on the CPU.

    Raises:
        CheckpointError: the file is missing or unreadable, holds other pickled objects, or has no
            dict of tensors; the message names the file and what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _unwrap(_torch_load(path), path)


# -- safetensors --------------------------------------------------------------------------------


def save_safetensors(path: str | os.PathLike, state_dict: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
    """Write tensors and string metadata as safetensors, atomically (temporary file, then rename).

    Args:
        path: destination file.
        state_dict: name -> tensor; tensors must not share memory (clone repeated ones).
        metadata: string -> string (e.g. the resolved config as JSON).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata))


def _load_safetensors(path: Path) -> StateDict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or damaged "
                              f"({_first_sentence(err)})") from None


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if it has none).

    Raises:
        CheckpointError: the file is missing, truncated or not safetensors.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or damaged "
                              f"({_first_sentence(err)})") from None


# -- this project's weights ---------------------------------------------------------------------


@dataclass
class HavicWeights:
    """A network's weights with the resolved configuration they belong to.

    Attributes:
        state_dict: parameter name -> tensor, as ``build_model(config.model, kind)`` expects.
        config: the validated configuration.
        kind: "pretrain" or "detector".
        metadata: the file's other metadata (strings).
    """

    state_dict: StateDict
    config: DictConfig
    kind: str
    metadata: dict[str, str] = field(default_factory=dict)


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, Tensor], cfg: DictConfig | Mapping[str, Any],
                 kind: str, heads: str | None = None, **extra: Any) -> Path:
    """Write a weights file: safetensors with the format, kind and resolved config (JSON) as metadata.

    Args:
        heads: detectors only: "trained" (fine-tuned, or a released detector) or "untrained" (pools
            and heads fresh, e.g. converted from a pretrainer). Without it a detector file records
            nothing, and :func:`detector_heads` judges it by its other metadata.
        extra: more metadata (strings).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {MODEL_KINDS}")
    if heads is not None and (kind != "detector" or heads not in HEADS):
        raise ValueError(f"heads={heads!r}: a detector's heads are one of {HEADS}; a pretrainer has none")
    from havic.config import to_container

    config = dict(cfg) if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig) else to_container(cfg)
    meta = {"format": WEIGHTS_FORMAT, "kind": kind, "config": json.dumps(config),
            **({"heads": heads} if heads else {}), **{k: str(v) for k, v in extra.items()}}
    save_safetensors(path, {k: v.clone() for k, v in state_dict.items()}, meta)
    return Path(path)


def read_weights(path: str | os.PathLike) -> HavicWeights:
    """Read a weights file of this project (:func:`save_weights`) or one of its Lightning checkpoints.

    Raises:
        CheckpointError: naming the file, when it is neither (e.g. an official HAVIC state dict,
            which :func:`havic.checkpoints.convert_official_havic` or ``tools/convert_weights.py
            official`` converts).
    """
    from havic.config import ConfigError, from_container

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        meta = read_safetensors_metadata(path)
        if meta.get("format") != WEIGHTS_FORMAT or "config" not in meta or meta.get("kind") not in MODEL_KINDS:
            raise CheckpointError(f"{path}: safetensors without havic metadata (format={meta.get('format')!r})")
        sd, container, kind = _load_safetensors(path), json.loads(meta.pop("config")), meta.pop("kind")
    else:
        obj = _torch_load(path)
        if not (isinstance(obj, dict) and CONFIG_KEY in obj and "state_dict" in obj):
            raise CheckpointError(
                f"{path}: not a havic checkpoint (no {CONFIG_KEY!r}); official HAVIC state dicts are converted "
                "with `tools/convert_weights.py official`"
            )
        container = obj[CONFIG_KEY]
        stage = container.get("train", {}).get("stage")
        if stage not in _STAGE_KIND:
            raise CheckpointError(f"{path}: stored config has no valid train.stage ({stage!r})")
        kind = _STAGE_KIND[stage]
        sd = {k[len("model."):]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
        meta = {"epoch": str(obj.get("epoch", -1)), "global_step": str(obj.get("global_step", -1))}
    try:
        cfg = from_container(container)
    except ConfigError as err:
        raise CheckpointError(f"{path}: stored configuration is invalid: {err}") from None
    return HavicWeights(sd, cfg, kind, meta)


def detector_heads(weights: HavicWeights) -> str:
    """Whether a detector's pools and heads were trained: "trained", "untrained" or "unknown".

    The ``heads`` metadata says so (:func:`save_weights`). A file without it, written before it was
    recorded, counts as trained when it is a fine-tuning run's checkpoint or export (a global step
    above 0 in its metadata) and as "unknown" otherwise (e.g. an older pretrain-to-detector conversion).
    """
    if weights.metadata.get("heads") in HEADS:
        return weights.metadata["heads"]
    try:
        step = int(weights.metadata.get("global_step", "-1"))
    except ValueError:
        step = -1
    return "trained" if step > 0 and weights.config.train.stage == "finetune" else "unknown"


def stored_config(path: str | os.PathLike) -> DictConfig | None:
    """The configuration in a safetensors file's ``config`` metadata; None for other or missing files, or without one.

    Raises:
        havic.config.ConfigError: the stored configuration is not valid.
    """
    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return None
    stored = read_safetensors_metadata(path).get("config")
    if not stored:
        return None
    from havic.config import from_container

    return from_container(json.loads(stored))
