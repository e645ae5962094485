"""Strict loading: every tensor is loaded, or explicitly expected to be missing, or ignored with a reason.

:func:`load_with_report` refuses a state dict with a missing, unexpected or mis-shaped tensor that
is not on its explicit lists, and names every such tensor; nothing is loaded unless all is clean.
The :class:`LoadReport` it returns accounts for every tensor.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from havic.checkpoints.files import CheckpointError, StateDict, _listing

__all__ = ["LoadReport", "fresh_model", "load_with_report"]


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


def fresh_model(cfg: Any, kind: str) -> nn.Module:
    """``build_model(cfg.model, kind)`` initialised from ``cfg.seed``: the network a conversion loads into.

    The tensors a conversion does not provide keep this initialisation, so the same configuration
    always gives the same file. The caller's random state is left as it was.
    """
    from havic.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model, kind)
