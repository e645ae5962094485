"""Checkpoint files and weight conversion with strict key accounting.

See docs/official-differences.md#checkpoints-and-initialisation.

Submodules, each importing only those above it:

* :mod:`~havic.checkpoints.files`: reading a state dict from any file (safetensors, or torch with
  ``weights_only=True``: arbitrary pickled objects are never unpickled), this project's weights
  files and the configuration stored with them, :class:`CheckpointError`;
* :mod:`~havic.checkpoints.strict`: :func:`load_with_report`, strict loading: a missing, unexpected
  or mis-shaped tensor that is not explicitly expected is an error that names it;
* :mod:`~havic.checkpoints.hub`: ``hf://ORG/REPO[/FILE]`` ids resolved through the Hugging Face cache;
* :mod:`~havic.checkpoints.rules`: the regex rename rules the converters share;
* :mod:`~havic.checkpoints.official`: the released official HAVIC state dicts (HAVIC_PT, HAVIC_FT)
  -> the ``official`` variant (``model.variant=official``);
* :mod:`~havic.checkpoints.upstream`: AudioMAE + MARLIN -> the initialisation of a pretrainer;
* :mod:`~havic.checkpoints.transfer`: a pretrainer -> the backbone of a detector, the initial weights
  of a training run, exporting a run's checkpoint, and loading a detector for inference.

Each converter is a pure function that returns the converted tensors together with every key it
left out and why.
"""
from __future__ import annotations

from havic.checkpoints.files import (
    CONFIG_KEY, HEADS, MODEL_KINDS, WEIGHTS_FORMAT, WRAPPER_KEYS, CheckpointError, HavicWeights, StateDict,
    check_torch_file, detector_heads, load_state_dict_file, read_safetensors_metadata, read_weights, save_safetensors,
    save_weights, stored_config,
)
from havic.checkpoints.hub import HubError, HubId, is_hub_id, parse_hub_id, resolve_weights
from havic.checkpoints.official import (
    OFFICIAL_FIXED_TABLES, OFFICIAL_KINDS, compare_fixed_tables, convert_official_havic, load_official, official_kind,
)
from havic.checkpoints.strict import LoadReport, fresh_model, load_with_report
from havic.checkpoints.transfer import (
    BACKBONE_PREFIXES, DETECTOR_HEAD_PATTERNS, PRETRAIN_PREFIXES, STRUCTURAL_KEYS, check_compatible,
    detector_from_pretrainer, export_checkpoint, init_weights, load_detector, pretrain_to_detector, read_init_weights,
)
from havic.checkpoints.upstream import (
    PRETRAIN_INIT_ONLY, ConversionReport, convert_audiomae, convert_audiomae_marlin, convert_marlin, init_pretrainer,
)

__all__ = [
    "BACKBONE_PREFIXES", "CONFIG_KEY", "DETECTOR_HEAD_PATTERNS", "MODEL_KINDS", "OFFICIAL_FIXED_TABLES",
    "OFFICIAL_KINDS", "PRETRAIN_INIT_ONLY", "PRETRAIN_PREFIXES", "STRUCTURAL_KEYS", "WEIGHTS_FORMAT", "WRAPPER_KEYS",
    "CheckpointError", "ConversionReport", "HavicWeights", "HubError", "HubId", "LoadReport", "StateDict", "check_compatible",
    "compare_fixed_tables", "convert_audiomae", "convert_audiomae_marlin", "convert_marlin", "convert_official_havic",
    "detector_from_pretrainer", "export_checkpoint", "fresh_model", "init_pretrainer", "init_weights", "is_hub_id",
    "load_detector", "load_official", "load_state_dict_file", "load_with_report", "official_kind",
    "parse_hub_id", "pretrain_to_detector", "read_init_weights", "read_safetensors_metadata", "read_weights",
    "resolve_weights", "save_safetensors",
    "save_weights", "stored_config", "HEADS", "check_torch_file", "detector_heads",
]
