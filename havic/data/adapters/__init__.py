"""Dataset adapters: walk a dataset root and return manifest rows plus the files they skipped.

Every adapter takes the dataset root (manifest paths are relative to it) and returns an
:class:`AdapterResult`. :func:`build` dispatches by name and checks that the options given apply
to that dataset.

==============  ============================================  ==================================
name            adapter                                       options
==============  ============================================  ==================================
fakeavceleb     :func:`fakeavceleb.fakeavceleb`               ``meta_csv``
lrs2            :func:`lrs.lrs2`                              ``subsets`` (main, pretrain)
lrs3            :func:`lrs.lrs3`                              ``subsets`` (pretrain, trainval, test)
kodf            :func:`kodf.kodf`                             ``subset_list``
hifi-avdf       :func:`hifi_avdf.hifi_avdf`                   (none)
generic         :func:`generic.generic`                       ``labels_csv``
av1m            :func:`avdeepfake1m.avdeepfake1m`             ``split_csv`` (SPLIT=CSV items)
avlips          :func:`avlips.avlips`                         ``split_csv`` (SPLIT=CSV items)
==============  ============================================  ==================================
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from havic.data.adapters._common import AdapterResult, SkippedFile, write_skipped
from havic.data.adapters.avdeepfake1m import avdeepfake1m
from havic.data.adapters.avlips import avlips
from havic.data.adapters.fakeavceleb import CROSS_MANIPULATION_HELD_OUT, cross_manipulation_folds, fakeavceleb
from havic.data.adapters.generic import generic
from havic.data.adapters.hifi_avdf import hifi_avdf
from havic.data.adapters.kodf import kodf
from havic.data.adapters.lrs import lrs2, lrs3

__all__ = [
    "ADAPTERS",
    "AdapterResult",
    "avdeepfake1m",
    "avlips",
    "CROSS_MANIPULATION_HELD_OUT",
    "SkippedFile",
    "build",
    "cross_manipulation_folds",
    "fakeavceleb",
    "generic",
    "hifi_avdf",
    "kodf",
    "lrs2",
    "lrs3",
    "write_skipped",
]

ADAPTERS: dict[str, Callable[..., AdapterResult]] = {
    "fakeavceleb": fakeavceleb,
    "lrs2": lrs2,
    "lrs3": lrs3,
    "kodf": kodf,
    "hifi-avdf": hifi_avdf,
    "generic": generic,
    "av1m": avdeepfake1m,
    "avlips": avlips,
}


def build(dataset: str, root: str | Path, **options: Any) -> AdapterResult:
    """Runs the adapter named `dataset` on `root`; options left at None are not passed.

    Raises:
        ValueError: an unknown dataset, or an option that this dataset's adapter does not take.
    """
    if dataset not in ADAPTERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(ADAPTERS)}")
    adapter = ADAPTERS[dataset]
    accepted = set(inspect.signature(adapter).parameters) - {"root"}
    given = {k: v for k, v in options.items() if v is not None}
    wrong = sorted(set(given) - accepted)
    if wrong:
        raise ValueError(f"option(s) {wrong} do not apply to {dataset}; it takes {sorted(accepted) or 'none'}")
    return adapter(root, **given)
