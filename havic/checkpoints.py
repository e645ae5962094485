"""Checkpoint files and weight conversion with strict key accounting (havic-spec §13).

Each source is converted into this package's parameter names by a pure function that returns the
converted tensors together with every key it left out and why:

* :func:`convert_official_havic`: the released official HAVIC state dicts (HAVIC_PT, HAVIC_FT; key
  layout of spec §13.2) -> the ``official`` variant (``model.variant=official``);
* :func:`convert_audiomae_marlin`: AudioMAE + MARLIN -> the initialisation of a pretrainer (the
  intended mapping of spec §13.3, without the official script's bugs);
* :func:`pretrain_to_detector`: a pretrainer -> the backbone of a detector (spec §13.4).

:func:`load_with_report` then loads strictly: a missing, unexpected or mis-shaped tensor that is not
explicitly expected is an error that names it. Files are read with ``torch.load(weights_only=True)``
or safetensors; arbitrary pickled objects are never unpickled.

Our models store tokens without the official leading singleton dimensions (a CLS table is (S, D),
not (1, S, D); a mask token (D,), not (1, 1, D)) and keep fixed sin-cos tables as non-persistent
buffers, so those tables are not part of our state dicts.
"""
from __future__ import annotations

import fnmatch
import functools
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from havic.utils.io import atomic_path
log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
OFFICIAL_KINDS = ("pretrain", "detector")

# Our pretrainer tensors that neither AudioMAE nor MARLIN can provide: they keep their fresh init.
PRETRAIN_INIT_ONLY = (
    "video_encoder.cls_tokens", "audio_encoder.cls_tokens", "audio_encoder.pos_embed", "audio_encoder.modality",
    "fusion.*", "video_decoder.cross.*", "audio_decoder.*", "audio_to_video.*", "video_to_audio.*",
)
# Detector tensors that a pretrainer does not have: the pooling, layer weights and heads.
DETECTOR_HEAD_PATTERNS = (
    "video_pools.*", "audio_pools.*", "video_layer_weights.*", "audio_layer_weights.*",
    "head.*", "audio_head.*", "video_head.*",
)
BACKBONE_PREFIXES = ("video_encoder.", "audio_encoder.", "fusion.")
PRETRAIN_PREFIXES = BACKBONE_PREFIXES + ("video_decoder.", "audio_decoder.", "audio_to_video.", "video_to_audio.")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, converted or loaded; the message names the file or the keys."""


def _listing(keys: Iterable[str], limit: int = 30) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


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
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        if found:
            raise CheckpointError(
                f"{path}: refused: the file holds a pickled {found.group(1)} object; only tensors, numbers, "
                "strings and plain containers are read (weights_only=True). If you trust the file, re-save "
                "its tensors once (e.g. torch.save(torch.load(path, weights_only=False)['model'], new_path))."
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = detail.group(1).strip() if detail else (text.strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from None
    return _unwrap(obj, path)


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


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


# --------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------


WEIGHTS_FORMAT = "havic-weights-1"  # safetensors metadata "format" of this project's weights files
CONFIG_KEY = "havic_config"  # where Lightning checkpoints of this project keep the resolved config
MODEL_KINDS = ("pretrain", "detector")
_STAGE_KIND = {"pretrain": "pretrain", "finetune": "detector"}


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
                 kind: str, **extra: Any) -> Path:
    """Write a weights file: safetensors with the format, kind and resolved config (JSON) as metadata."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {MODEL_KINDS}")
    from havic.config import to_container

    config = dict(cfg) if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig) else to_container(cfg)
    meta = {"format": WEIGHTS_FORMAT, "kind": kind, "config": json.dumps(config),
            **{k: str(v) for k, v in extra.items()}}
    save_safetensors(path, {k: v.clone() for k, v in state_dict.items()}, meta)
    return Path(path)


def read_weights(path: str | os.PathLike) -> HavicWeights:
    """Read a weights file of this project (:func:`save_weights`) or one of its Lightning checkpoints.

    Raises:
        CheckpointError: naming the file, when it is neither (e.g. an official HAVIC state dict,
            which :func:`convert_official_havic` or ``tools/convert_weights.py official`` converts).
    """
    from havic.config import ConfigError, from_container

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        meta = read_safetensors_metadata(path)
        if meta.get("format") != WEIGHTS_FORMAT or "config" not in meta or meta.get("kind") not in MODEL_KINDS:
            raise CheckpointError(f"{path}: safetensors without havic metadata (format={meta.get('format')!r})")
        from safetensors.torch import load_file

        sd, container, kind = load_file(str(path)), json.loads(meta.pop("config")), meta.pop("kind")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means: not a safe tensors-only file
            raise CheckpointError(f"{path}: not readable with weights_only=True ({type(err).__name__}: {err})") from None
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


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


@dataclass
class LoadReport:
    """What :func:`load_with_report` did with every tensor.

    Attributes:
        loaded: model keys that received a checkpoint tensor.
        missing: model keys absent from the checkpoint (kept at their current values).
        unexpected: checkpoint keys the model does not have.
        ignored: checkpoint key -> reason it was deliberately not loaded.
        mismatched: key -> (checkpoint shape, model shape), not loaded.
        expected_missing: the glob patterns of model keys allowed to be missing.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    expected_missing: tuple[str, ...] = ()

    @property
    def unexplained_missing(self) -> list[str]:
        """Missing keys not covered by :attr:`expected_missing`."""
        return [k for k in self.missing if not _matches(k, self.expected_missing)]

    @property
    def ok(self) -> bool:
        return not (self.unexplained_missing or self.unexpected or self.mismatched)

    def problems(self) -> list[str]:
        """One line per kind of error (empty when :attr:`ok`)."""
        lines = []
        if self.unexplained_missing:
            lines.append(f"missing from the checkpoint ({len(self.unexplained_missing)}): "
                         f"{_listing(self.unexplained_missing)}")
        if self.unexpected:
            lines.append(f"unexpected in the checkpoint ({len(self.unexpected)}): {_listing(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} checkpoint {list(a)} vs model {list(b)}" for k, (a, b) in self.mismatched.items()]
            lines.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
        return lines

    def summary(self, max_keys: int = 30) -> str:
        """A readable multi-line account: counts, then the keys of every category."""
        left = [k for k in self.missing if _matches(k, self.expected_missing)]
        lines = [
            f"loaded {len(self.loaded)} tensors; left at their current values {len(left)}; "
            f"ignored {len(self.ignored)}; missing {len(self.unexplained_missing)}; "
            f"unexpected {len(self.unexpected)}; shape mismatches {len(self.mismatched)}"
        ]
        if left:  # grouped by the pattern that allowed them
            groups = {p: sum(fnmatch.fnmatchcase(k, p) for k in left) for p in self.expected_missing}
            lines.append("  left at current values: " + ", ".join(f"{p} ({n})" for p, n in groups.items() if n))
        by_reason: dict[str, list[str]] = {}
        for k, reason in self.ignored.items():
            by_reason.setdefault(reason, []).append(k)
        for reason, keys in by_reason.items():
            lines.append(f"  ignored ({reason}): {_listing(keys, max_keys)}")
        lines += ["  " + p for p in self.problems()]
        return "\n".join(lines)


def load_with_report(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    expected_missing: Sequence[str] = (),
    ignored: Mapping[str, str] | Sequence[tuple[str, str]] = (),
) -> LoadReport:
    """Load ``state_dict`` into ``model`` strictly, with an explicit list of exceptions.

    Args:
        model: the module to load into.
        state_dict: name -> tensor, in the model's naming.
        expected_missing: glob patterns (``fnmatch``, ``*`` also matches dots) of model keys that
            may be absent from the checkpoint; they keep their current values.
        ignored: glob pattern -> reason for checkpoint keys that are deliberately not loaded.

    Returns:
        The :class:`LoadReport`; nothing is loaded unless it is clean.

    Raises:
        CheckpointError: any missing key not expected, any unexpected key, any shape mismatch;
            the message lists them all.
    """
    rules = list(ignored.items()) if isinstance(ignored, Mapping) else list(ignored)
    own = model.state_dict()
    report = LoadReport(expected_missing=tuple(expected_missing))
    to_load: StateDict = {}
    for key, value in state_dict.items():
        reason = next((r for p, r in rules if fnmatch.fnmatchcase(key, p)), None)
        if reason is not None:
            report.ignored[key] = reason
        elif key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched[key] = (tuple(value.shape), tuple(own[key].shape))
        else:
            to_load[key] = value
    report.missing = [k for k in own if k not in to_load and k not in report.mismatched and k not in report.ignored]
    if not report.ok:
        raise CheckpointError(f"cannot load into {type(model).__name__}:\n" + "\n".join(report.problems()))
    result = model.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen after the checks above; guards against silent skips
        raise CheckpointError(f"load_state_dict rejected {_listing(result.unexpected_keys)}")
    report.loaded = list(to_load)
    return report


# --------------------------------------------------------------------------------------------------
# Parameter-name translation shared by the converters
# --------------------------------------------------------------------------------------------------

_PARAMS = ("weight", "bias")
_QV_BLOCK = frozenset(
    [f"{m}.{p}" for m in ("norm1", "norm2", "attn.proj", "mlp.fc1", "mlp.fc2") for p in _PARAMS]
    + ["attn.q_bias", "attn.v_bias", "attn.qkv.weight"]
)
_TIMM_BLOCK = frozenset(
    [f"{m}.{p}" for m in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2") for p in _PARAMS]
)
# MARLIN-style blocks name their MLP layers ``mlp.layers.{0,1}.linear``; ours are ``mlp.fc1/fc2``.
_MLP_RENAMES = {"mlp.layers.0.linear": "mlp.fc1", "mlp.layers.1.linear": "mlp.fc2"}


def _split_param(rest: str) -> tuple[str, str] | None:
    module, _, param = rest.rpartition(".")
    return (module, param) if module and param in _PARAMS else None


def _qv_block(rest: str) -> str | None:
    """Suffix of a q/v-bias block (official encoders/decoders, MARLIN, ours)."""
    split = _split_param(rest)
    if split and split[0] in _MLP_RENAMES:
        rest = f"{_MLP_RENAMES[split[0]]}.{split[1]}"
    return rest if rest in _QV_BLOCK else None


def _timm_block(rest: str) -> str | None:
    """Suffix of a full-bias timm block (A2V/V2A)."""
    return rest if rest in _TIMM_BLOCK else None


def _renamed(modules: Mapping[str, str]) -> Callable[[str], str | None]:
    """Suffix translator for ``<module>.<weight|bias>`` with a module rename table."""

    def translate(rest: str) -> str | None:
        split = _split_param(rest)
        if split is None or split[0] not in modules:
            return None
        return f"{modules[split[0]]}.{split[1]}"

    return translate


_cross_modal = _renamed({
    "norm_q": "norm_q", "norm_k": "norm_k", "norm2": "norm2", "q_proj": "q", "k_proj": "k", "v_proj": "v",
    "proj": "proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
})
_hierarchical = _renamed({
    "query_proj": "q", "key_proj": "k", "value_proj": "v", "encoder2decoder": "encoder_proj",
    "norm_q": "norm_q", "norm_k": "norm_k", "out_norm": "norm_out",
})


def _to(template: str, translate: Callable[[str], str | None] | None = None) -> Callable[[re.Match], str | None]:
    """Target builder: ``template`` expanded with the match groups, plus the translated ``rest`` group."""

    def target(m: re.Match) -> str | None:
        head = m.expand(template)
        if translate is None:
            return head
        tail = translate(m.group("rest"))
        return None if tail is None else head + tail

    return target


def _param_only(template: str) -> Callable[[re.Match], str | None]:
    """``<prefix>.<weight|bias>`` -> ``template + <weight|bias>``."""
    return _to(template, lambda rest: rest if rest in _PARAMS else None)


Rule = tuple[re.Pattern, Callable[[re.Match], str | None]]


def _rules(*pairs: tuple[str, Callable[[re.Match], str | None]]) -> list[Rule]:
    return [(re.compile(p), f) for p, f in pairs]


def _first_rule(key: str, rules: Sequence[Rule]) -> str | None:
    """Target of the first rule whose pattern matches ``key`` entirely (None: no rule, or an unknown suffix)."""
    for pattern, target in rules:
        m = pattern.fullmatch(key)
        if m:
            return target(m)
    return None


def _first_reason(key: str, reasons: Sequence[tuple[re.Pattern, str]]) -> str | None:
    return next((r for p, r in reasons if p.fullmatch(key)), None)


def _drop_leading_ones(t: Tensor, ndim: int, key: str) -> Tensor:
    """(1, ..., 1, *shape) -> shape with ``ndim`` dims; raises if a dropped dim is not 1."""
    if t.ndim < ndim or any(s != 1 for s in t.shape[: t.ndim - ndim]):
        raise CheckpointError(f"{key}: expected {ndim} dims after leading singleton dims, got shape {list(t.shape)}")
    return t.reshape(t.shape[t.ndim - ndim:])


def _count_indexed(sd: Mapping[str, Tensor], prefix: str) -> int:
    """Number of distinct ``<prefix><i>.`` indices among the keys."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd for m in [pat.match(k)] if m})


# --------------------------------------------------------------------------------------------------
# Official HAVIC (HAVIC_PT / HAVIC_FT) -> the official variant
# --------------------------------------------------------------------------------------------------

_FIXED = "fixed sin-cos table; the model recomputes it as a buffer"
_AVIM = r"AudioVisualInteractionModule\."
_OFFICIAL_IGNORED_COMMON = [
    (r"visual_encoder\.pos_embedding\.emb", _FIXED),
    (r"visual_encoder\.cls_pos_embed", _FIXED),
    (r"audio_encoder\.cls_pos_embed",
     "computed then discarded by the official audio encoder: its CLS tokens carry no position (audio_cls_pos=false)"),
    (_AVIM + r"(audio_mask_token|audio_modality|audio_pos_embed|visual_mask_token|visual_pos_embedding\.emb)",
     "never used by the official interaction module (spec §5)"),
    (_AVIM + r"blocks\.0\.self_attn_(video|audio)\..+",
     "dead self-attention block: computed and discarded by the official interaction module (spec §5)"),
]
_OFFICIAL_IGNORED_PRETRAIN = [
    (r"visual_decoder\.pos_embedding\.emb", _FIXED),
    (r"audio_decoder\.decoder_pos_embed", _FIXED),
    (r"A2V\.audio_pos_embed", _FIXED),
    (r"V2A\.visual_pos_embedding\.emb", _FIXED),
]
# Official fixed tables -> our buffers holding the same values (see compare_fixed_tables).
OFFICIAL_FIXED_TABLES = {
    "visual_encoder.pos_embedding.emb": "video_encoder.pos_embed",
    "visual_encoder.cls_pos_embed": "video_encoder.cls_pos",
    "visual_decoder.pos_embedding.emb": "video_decoder.pos_embed",
    "audio_decoder.decoder_pos_embed": "audio_decoder.pos_embed",
    "A2V.audio_pos_embed": "audio_to_video.pos_embed",
    "V2A.visual_pos_embedding.emb": "video_to_audio.pos_embed",
}
# Our tensors stored without the official leading singleton dims -> their number of dims.
_TOKEN_NDIM = {
    "audio_encoder.pos_embed": 2, "audio_encoder.modality": 1, "audio_encoder.cls_tokens": 2,
    "video_encoder.cls_tokens": 2, "video_decoder.mask_token": 1, "audio_decoder.mask_token": 1,
    "audio_decoder.modality": 1, "audio_to_video.mask_token": 1, "audio_to_video.modality": 1,
    "video_to_audio.mask_token": 1,
}


def _official_rules(kind: str, sd: Mapping[str, Tensor]) -> list[Rule]:
    rules = _rules(
        (r"audio_encoder\.(pos_embed|modality|cls_tokens)", _to(r"audio_encoder.\1")),
        (r"audio_encoder\.patch_embed\.proj\.(?P<rest>.+)", _param_only("audio_encoder.patch_embed.")),
        (r"audio_encoder\.norm\.(?P<rest>.+)", _param_only("audio_encoder.norm.")),
        (r"audio_encoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"audio_encoder.blocks.\1.", _qv_block)),
        (r"visual_encoder\.cls_tokens", _to("video_encoder.cls_tokens")),
        (r"visual_encoder\.patch_embedding\.projection\.(?P<rest>.+)", _param_only("video_encoder.patch_embed.")),
        (r"visual_encoder\.norm\.(?P<rest>.+)", _param_only("video_encoder.norm.")),
        (r"visual_encoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_encoder.blocks.\1.", _qv_block)),
        # cross_attn_audio_to_video reads audio to update the *video* stream (query = video).
        (_AVIM + r"blocks\.0\.cross_attn_audio_to_video\.(?P<rest>.+)", _to("fusion.video_cross.", _cross_modal)),
        (_AVIM + r"blocks\.0\.cross_attn_video_to_audio\.(?P<rest>.+)", _to("fusion.audio_cross.", _cross_modal)),
        (_AVIM + r"norm_video_out\.(?P<rest>.+)", _param_only("fusion.video_norm.")),
        (_AVIM + r"norm_audio_out\.(?P<rest>.+)", _param_only("fusion.audio_norm.")),
    )
    if kind == "pretrain":
        nv = _count_indexed(sd, "visual_decoder.blocks.")
        na = _count_indexed(sd, "audio_decoder.blocks.")
        rules += _rules(
            (r"visual_decoder\.mask_token", _to("video_decoder.mask_token")),
            (r"visual_decoder\.norm\.(?P<rest>.+)", _param_only("video_decoder.norm.")),
            (r"visual_decoder\.enc_dec_proj\.weight", _to("video_decoder.embed.weight")),
            (r"visual_decoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_decoder.blocks.\1.", _qv_block)),
            # head_l predicts after decoder layer l (1-based); the unnumbered head after the last layer.
            (r"visual_decoder\.head_(\d+)\.(weight|bias)", lambda m: f"video_decoder.heads.{int(m[1]) - 1}.{m[2]}"),
            (r"visual_decoder\.head\.(weight|bias)", lambda m: f"video_decoder.heads.{nv - 1}.{m[1]}"),
            (r"visual_decoder\.HiA_(\d+)\.(?P<rest>.+)", _to(r"video_decoder.cross.\1.", _hierarchical)),
            (r"audio_decoder\.mask_token", _to("audio_decoder.mask_token")),
            (r"audio_decoder\.decoder_modality", _to("audio_decoder.modality")),
            (r"audio_decoder\.decoder_norm\.(?P<rest>.+)", _param_only("audio_decoder.norm.")),
            (r"audio_decoder\.decoder_embed\.weight", _to("audio_decoder.embed.weight")),
            (r"audio_decoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"audio_decoder.blocks.\1.", _qv_block)),
            (r"audio_decoder\.decoder_pred_(\d+)\.(weight|bias)",
             lambda m: f"audio_decoder.heads.{int(m[1]) - 1}.{m[2]}"),
            (r"audio_decoder\.decoder_pred\.(weight|bias)", lambda m: f"audio_decoder.heads.{na - 1}.{m[1]}"),
            (r"audio_decoder\.HiA_(\d+)\.(?P<rest>.+)", _to(r"audio_decoder.cross.\1.", _hierarchical)),
            (r"A2V\.audio_mask_token", _to("audio_to_video.mask_token")),
            (r"A2V\.audio_modality", _to("audio_to_video.modality")),
            (r"A2V\.TokenAligner\.output_layer\.(?P<rest>.+)", _param_only("audio_to_video.aligner.")),
            (r"A2V\.block\.(?P<rest>.+)", _to("audio_to_video.block.", _timm_block)),
            (r"A2V\.norm\.(?P<rest>.+)", _param_only("audio_to_video.norm.")),
            (r"V2A\.visual_mask_token", _to("video_to_audio.mask_token")),
            (r"V2A\.TokenAligner\.output_layer\.(?P<rest>.+)", _param_only("video_to_audio.aligner.")),
            (r"V2A\.block\.(?P<rest>.+)", _to("video_to_audio.block.", _timm_block)),
            (r"V2A\.norm\.(?P<rest>.+)", _param_only("video_to_audio.norm.")),
        )
    else:
        heads = {"classifier": "head", "classifier_audio": "audio_head", "classifier_visual": "video_head"}
        # FlexibleMLP: layers.i (Linear) + output_layer; our MLPHead is Sequential(Linear, Dropout, ReLU, ...).
        hidden = {name: _count_indexed(sd, f"{name}.layers.") for name in heads}
        rules += _rules(
            (r"(Audio|Visual)TokenReducer_(\d+|AVI)\.mlp\.([02])\.(weight|bias)",
             lambda m: f"{'audio' if m[1] == 'Audio' else 'video'}_pools."
                       f"{'fusion' if m[2] == 'AVI' else m[2]}.score.{m[3]}.{m[4]}"),
            (r"pool_a\.weights", _to("audio_layer_weights.logits")),
            (r"pool_v\.weights", _to("video_layer_weights.logits")),
            (r"(classifier|classifier_audio|classifier_visual)\.layers\.(\d+)\.(weight|bias)",
             lambda m: f"{heads[m[1]]}.layers.{3 * int(m[2])}.{m[3]}"),
            (r"(classifier|classifier_audio|classifier_visual)\.output_layer\.(weight|bias)",
             lambda m: f"{heads[m[1]]}.layers.{3 * hidden[m[1]]}.{m[2]}"),
        )
    return rules


_OTHER_KIND_HINT = {
    "pretrain": (re.compile(r"(classifier|pool_[av]|\w+TokenReducer_)"), "detector", "HAVIC_FT (fine-tuned)"),
    "detector": (re.compile(r"(visual_decoder|audio_decoder|A2V|V2A)\."), "pretrain", "HAVIC_PT (pretraining)"),
}


def convert_official_havic(sd: Mapping[str, Tensor], kind: str) -> tuple[StateDict, dict[str, str]]:
    """Rename a released official HAVIC state dict to the ``official`` variant of our networks.

    Every official tensor lands in exactly one of our tensors or is returned as ignored with the
    reason: the fixed sin-cos tables (recomputed as buffers), the audio encoder's never-applied
    CLS positional table, and the interaction module's dead self-attention blocks and unused
    tokens/tables. Tokens lose their leading singleton dims.

    Args:
        sd: an official HAVIC_PT (``kind="pretrain"``, 676 tensors) or HAVIC_FT
            (``kind="detector"``, 456 tensors) state dict, unwrapped.
        kind: which official model it comes from.

    Returns:
        (our state dict for ``build_model(official cfg, kind)``, official key -> reason ignored).

    Raises:
        CheckpointError: an official key matches no rule, two keys map to one target, or a token
            has an unexpected shape.
    """
    if kind not in OFFICIAL_KINDS:
        raise CheckpointError(f"official checkpoint kind {kind!r}: expected one of {list(OFFICIAL_KINDS)}")
    ignored_rules = [(re.compile(p), r) for p, r in _OFFICIAL_IGNORED_COMMON]
    if kind == "pretrain":
        ignored_rules += [(re.compile(p), r) for p, r in _OFFICIAL_IGNORED_PRETRAIN]
    rules = _official_rules(kind, sd)
    out: StateDict = {}
    source: dict[str, str] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        reason = _first_reason(key, ignored_rules)
        if reason is not None:
            ignored[key] = reason
            continue
        target = _first_rule(key, rules)
        if target is None:
            unknown.append(key)
            continue
        if target in out:
            raise CheckpointError(f"official keys {source[target]} and {key} both map to {target}")
        out[target] = _drop_leading_ones(value, _TOKEN_NDIM[target], key) if target in _TOKEN_NDIM else value
        source[target] = key
    if unknown:
        pattern, other, name = _OTHER_KIND_HINT[kind]
        hint = f" (this looks like an official {name} state dict: use kind={other!r})" if any(
            pattern.match(k) for k in unknown) else ""
        raise CheckpointError(
            f"{len(unknown)} official keys match no rule for kind={kind!r}{hint}: {_listing(unknown)}")
    return out, ignored


def compare_fixed_tables(official_sd: Mapping[str, Tensor], model: nn.Module) -> dict[str, float]:
    """Max abs difference between the official fixed sin-cos tables and our recomputed buffers.

    A large difference means the checkpoint was made with another token layout than ``model``.

    Args:
        official_sd: an official HAVIC state dict.
        model: our network built with the official variant.

    Returns:
        Official key -> max abs difference, for every table present in both.
    """
    buffers = dict(model.named_buffers())
    out = {}
    for key, ours in OFFICIAL_FIXED_TABLES.items():
        if key in official_sd and ours in buffers:
            theirs = official_sd[key].float()
            mine = buffers[ours].float().cpu()
            if theirs.numel() != mine.numel():
                out[key] = float("inf")
                continue
            out[key] = float((theirs.reshape(mine.shape) - mine).abs().max())
    return out


# --------------------------------------------------------------------------------------------------
# AudioMAE + MARLIN -> pretrainer initialisation
# --------------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """Where every upstream tensor went.

    Attributes:
        loaded: our key -> upstream source (``"audiomae:<key>"`` / ``"marlin:<key>"``, with a slice
            or an operation where the tensor was cut or transposed).
        skipped: upstream source -> reason it was not used.
    """

    loaded: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self, max_keys: int = 30) -> str:
        lines = [f"converted {len(self.loaded)} of our tensors; skipped {len(self.skipped)} upstream tensors"]
        by_reason: dict[str, list[str]] = {}
        for k, reason in self.skipped.items():
            by_reason.setdefault(reason, []).append(k)
        for reason, keys in by_reason.items():
            lines.append(f"  skipped ({reason}): {_listing(keys, max_keys)}")
        return "\n".join(lines)


_AUDIOMAE_SKIPPED = [
    (r"cls_token", "AudioMAE's single global CLS token; this model has one CLS token per segment (kept at init)"),
    (r"pos_embed", "AudioMAE's 513 positions (CLS + 512 patches of its time-major grid): a different layout; "
                   "the learnable audio positions keep their 2-D sin-cos init"),
    (r"mask_token|decoder_.+", "AudioMAE's decoder (512 wide, windowed attention) has no counterpart; "
                               "the audio decoder here is 384 wide and starts from its init"),
]
_MARLIN_SKIPPED = [(r"(encoder|decoder)\.pos_embedding\.emb", _FIXED)]


def _model_cfg_json(model_cfg: Any) -> str:
    if isinstance(model_cfg, DictConfig):
        return json.dumps(OmegaConf.to_container(model_cfg, resolve=True), sort_keys=True)
    return json.dumps(model_cfg, sort_keys=True, default=str)


@functools.lru_cache(maxsize=8)
def _pretrainer_shapes(cfg_json: str) -> dict[str, tuple[int, ...]]:
    """Our pretrainer's state-dict shapes for a model config, from a parameter-free (meta) build."""
    from havic.config import model_config
    from havic.models import build_model

    cfg = model_config(**json.loads(cfg_json))
    with torch.device("meta"):
        model = build_model(cfg, "pretrain")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_audiomae_marlin(
    audiomae_sd: Mapping[str, Tensor], marlin_sd: Mapping[str, Tensor], model_cfg: Any,
) -> tuple[StateDict, ConversionReport]:
    """Initial pretrainer weights from AudioMAE (audio encoder) and MARLIN (video encoder and decoder).

    Audio encoder <- AudioMAE ``patch_embed``, ``blocks``, ``norm``. AudioMAE was trained on
    (time, mel) images; when ``model_cfg.audio_token_order == "mel"`` our patch embedding sees
    (mel, time) images, so the kernel's last two axes are swapped and every filter still sees the
    patch it was trained on. AudioMAE's fused ``qkv.bias`` is split into ``q_bias`` / ``v_bias``
    and its key part dropped, which is exact (see the comment in the code).

    Video encoder <- MARLIN ``encoder.*`` (patch embedding, blocks, norm); video decoder <- MARLIN
    ``decoder.blocks``, ``decoder.norm``, ``decoder.mask_token``, ``enc_dec_proj`` and
    ``decoder.head`` copied into every decoder layer's head.

    Args:
        audiomae_sd: AudioMAE pretraining state dict (unwrapped).
        marlin_sd: MARLIN state dict (unwrapped).
        model_cfg: the resolved ``model`` section our pretrainer is built from.

    Returns:
        (our tensors that received upstream weights, the :class:`ConversionReport`). Load with
        ``load_with_report(model, sd, expected_missing=PRETRAIN_INIT_ONLY)``.

    Raises:
        CheckpointError: an upstream key matches no rule, or a tensor does not fit our model.
    """
    shapes = _pretrainer_shapes(_model_cfg_json(model_cfg))
    out: StateDict = {}
    report = ConversionReport()

    def put(target: str, value: Tensor, src: str) -> None:
        if target not in shapes:
            raise CheckpointError(f"{src}: target {target} does not exist in the pretrainer (check model.depth / taps)")
        if tuple(value.shape) != shapes[target]:
            raise CheckpointError(f"{src} -> {target}: shape {list(value.shape)} does not fit {list(shapes[target])}")
        if target in out:
            raise CheckpointError(f"{src}: {target} already set from {report.loaded[target]}")
        out[target] = value
        report.loaded[target] = src

    unknown = []
    skip = [(re.compile(p), r) for p, r in _AUDIOMAE_SKIPPED]
    transpose = model_cfg.audio_token_order == "mel"
    audio_rules = _rules(
        (r"patch_embed\.proj\.(?P<rest>.+)", _param_only("audio_encoder.patch_embed.")),
        (r"blocks\.(\d+)\.(?P<rest>.+)", _to(r"audio_encoder.blocks.\1.", _qv_block)),
        (r"norm\.(?P<rest>.+)", _param_only("audio_encoder.norm.")),
    )
    for key, value in audiomae_sd.items():
        src = f"audiomae:{key}"
        reason = _first_reason(key, skip)
        if reason is not None:
            report.skipped[src] = reason
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.bias", key)
        if m:
            if value.ndim != 1 or value.numel() % 3:
                raise CheckpointError(f"{src}: expected a fused (3 * D,) bias, got shape {list(value.shape)}")
            # A key bias b_k adds q . b_k to every score of query q: the same constant across the
            # keys it is compared with, which the softmax removes. Dropping it is therefore exact;
            # our attention learns only the query and value biases (key bias fixed at zero).
            q_bias, _, v_bias = value.chunk(3)
            d = q_bias.numel()
            put(f"audio_encoder.blocks.{m[1]}.attn.q_bias", q_bias, f"{src}[0:{d}]")
            put(f"audio_encoder.blocks.{m[1]}.attn.v_bias", v_bias, f"{src}[{2 * d}:{3 * d}]")
            report.skipped[f"{src}[{d}:{2 * d}]"] = (
                "key bias: a per-query constant added to every score, cancelled exactly by the softmax")
            continue
        target = _first_rule(key, audio_rules)
        if target is None:
            unknown.append(src)
        elif target == "audio_encoder.patch_embed.weight" and transpose:
            # AudioMAE's filters index (time, mel); the mel-major grid feeds (mel, time) patches.
            put(target, value.transpose(-1, -2).contiguous(), f"{src} (time/mel axes swapped)")
        else:
            put(target, value, src)

    skip = [(re.compile(p), r) for p, r in _MARLIN_SKIPPED]
    n_heads = sum(1 for k in shapes if re.fullmatch(r"video_decoder\.heads\.\d+\.weight", k))
    video_rules = _rules(
        (r"encoder\.patch_embedding\.projection\.(?P<rest>.+)", _param_only("video_encoder.patch_embed.")),
        (r"encoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_encoder.blocks.\1.", _qv_block)),
        (r"encoder\.norm\.(?P<rest>.+)", _param_only("video_encoder.norm.")),
        (r"decoder\.blocks\.(\d+)\.(?P<rest>.+)", _to(r"video_decoder.blocks.\1.", _qv_block)),
        (r"decoder\.norm\.(?P<rest>.+)", _param_only("video_decoder.norm.")),
        (r"enc_dec_proj\.weight", _to("video_decoder.embed.weight")),
        (r"decoder\.mask_token", _to("video_decoder.mask_token")),
    )
    for key, value in marlin_sd.items():
        src = f"marlin:{key}"
        reason = _first_reason(key, skip)
        if reason is not None:
            report.skipped[src] = reason
            continue
        m = re.fullmatch(r"decoder\.head\.(weight|bias)", key)
        if m:
            # MARLIN has one prediction head; every hierarchical decoder layer starts from it.
            for i in range(n_heads):
                put(f"video_decoder.heads.{i}.{m[1]}", value.clone(), src)
            continue
        target = _first_rule(key, video_rules)
        if target is None:
            unknown.append(src)
        elif target == "video_decoder.mask_token":
            put(target, _drop_leading_ones(value, 1, src), src)
        else:
            put(target, value, src)
    if unknown:
        raise CheckpointError(f"{len(unknown)} upstream keys match no rule: {_listing(unknown)}")
    return out, report


# --------------------------------------------------------------------------------------------------
# Pretrainer -> detector
# --------------------------------------------------------------------------------------------------


def pretrain_to_detector(pretrain_sd: Mapping[str, Tensor]) -> StateDict:
    """The backbone part of a pretrainer state dict: both encoders and the fusion module.

    Decoders and semantic translators are dropped; the detector's pooling and heads are not in a
    pretrainer. Load the result with ``load_with_report(detector, sd,
    expected_missing=DETECTOR_HEAD_PATTERNS)``.

    Raises:
        CheckpointError: a key is not a pretrainer key, or the encoders are absent.
    """
    foreign = [k for k in pretrain_sd if not k.startswith(PRETRAIN_PREFIXES)]
    if foreign:
        raise CheckpointError(f"not a pretrainer state dict: unknown keys {_listing(foreign)}")
    out = {k: v for k, v in pretrain_sd.items() if k.startswith(BACKBONE_PREFIXES)}
    for prefix in ("video_encoder.", "audio_encoder."):
        if not any(k.startswith(prefix) for k in out):
            raise CheckpointError(f"pretrainer state dict has no {prefix}* tensors")
    return out
