"""Parameter-name translation shared by the converters: regex rename rules and block translators.

A converter is a list of rules ``(pattern, target)``: the first pattern that matches a foreign key
entirely gives our key, built from its groups by :func:`_to` / :func:`_param_only`; the suffix
after a block's prefix (group ``rest``) goes through a translator such as :func:`_qv_block` that
knows the parameter names of one kind of block. A key that no rule matches, or whose suffix the
translator does not know, gets no target: the converters report every such key as an error.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

from torch import Tensor

from havic.checkpoints.files import CheckpointError

# Reason for leaving out a foreign fixed table (every converter meets them).
_FIXED = "fixed sin-cos table; the model recomputes it as a buffer"

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

Target = Callable[[re.Match], str | None]
Rule = tuple[re.Pattern, Target]


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


def _to(template: str, translate: Callable[[str], str | None] | None = None) -> Target:
    """Target builder: ``template`` expanded with the match groups, plus the translated ``rest`` group."""

    def target(m: re.Match) -> str | None:
        head = m.expand(template)
        if translate is None:
            return head
        tail = translate(m.group("rest"))
        return None if tail is None else head + tail

    return target


def _param_only(template: str) -> Target:
    """``<prefix>.<weight|bias>`` -> ``template + <weight|bias>``."""
    return _to(template, lambda rest: rest if rest in _PARAMS else None)


def _rules(*pairs: tuple[str, Target]) -> list[Rule]:
    return [(re.compile(p), f) for p, f in pairs]


def _reasons(pairs: Sequence[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    """(pattern, reason) pairs with their patterns compiled, for :func:`_first_reason`."""
    return [(re.compile(p), r) for p, r in pairs]


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
