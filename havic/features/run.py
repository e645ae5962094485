"""Extracting many videos into a feature store: resumable, shardable, one failure never stops the job."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from havic.data.errors import MediaError
from havic.data.video import probe
from havic.features.extractor import Extractor
from havic.features.store import STORE_DTYPES, FeatureStore, StoredVideo
from havic.inference.jobs import InferenceItem

__all__ = ["ExtractSummary", "extract_to_store", "stored_video"]

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    """What a run did: videos extracted now, skipped (done before), failed now, and the index counts."""

    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    stored: int = 0
    failures: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        return (f"extracted {self.extracted}, skipped {self.skipped} (done before), failed {self.failed}"
                f"{f' ({why})' if why else ''} in {self.seconds:.1f} s; the store holds {self.stored} videos "
                f"and {self.failures} failures")


def stored_video(item: InferenceItem) -> StoredVideo:
    """The store's name and fields of an input (:func:`havic.inference.collect_inputs`)."""
    return StoredVideo(item.path, item.label, item.category, str(item.extra.get("split", "")))


def extract_to_store(extractor: Extractor, items: Sequence[InferenceItem], out: str | os.PathLike, *,
                     shard: tuple[int, int] = (0, 1), retry_failed: bool = False, store_dtype: str = "float32",
                     progress: bool = True, workers: int = 1, extractor_spec: Mapping[str, Any] | None = None,
                     index: bool = True) -> ExtractSummary:
    """Extract every input of this shard that the store at `out` does not hold yet, then rebuild its index.

    Args:
        extractor: what to run; its settings (plus `store_dtype`) must match the store's.
        items: the inputs (:func:`havic.inference.collect_inputs`), in index order.
        out: the store folder (created when missing).
        shard: (i, N): only the items whose position modulo N is i; N jobs can share one store.
        retry_failed: redo inputs with a failure marker.
        store_dtype: "float32" or "float16" values on disk.
        progress: show a progress bar over the videos (tqdm).
        workers: processes extracting at once: this one and ``workers - 1`` spawned ones, each with
            its own encoder built from `extractor_spec` (:func:`havic.features.registry.build_extractor`
            keyword arguments, ``name`` and ``weights`` included), each taking every ``workers``-th
            video left to do. Decoding and face cropping run on the CPU beside the encoder, so this
            pays where they, not the encoder, limit the rate (e.g. a GPU encoder fed by CPU decoding).
        index: rebuild ``index.csv`` and ``failures.csv`` at the end.

    Raises:
        ValueError: the store exists with other settings (naming the keys), or a bad shard or dtype.
    """
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need 0 <= i < N")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype={store_dtype!r}: expected one of {sorted(STORE_DTYPES)}")
    store = FeatureStore.create(out, {**extractor.settings(), "store_dtype": store_dtype})
    t0 = time.perf_counter()
    summary = ExtractSummary()
    mine = [it for k, it in enumerate(items) if k % n == i]
    todo = [it for it in mine if not store.is_done(stored_video(it), retry_failed)]
    summary.skipped = len(mine) - len(todo)
    if workers > 1 and len(todo) > 1:
        if extractor_spec is None:
            raise ValueError("workers > 1 needs extractor_spec to build the encoder in each worker")
        return _extract_parallel(extractor, extractor_spec, todo, items, store, retry_failed, store_dtype,
                                 min(workers, len(todo)), summary, t0, progress)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="video", desc=f"extract {extractor.name}")
    for it in todo:
        video = stored_video(it)
        try:
            seqs = extractor.extract(it.file)
        except MediaError as err:
            store.write_failure(video, err.reason, err.detail)
            summary.failed += 1
            summary.reasons[err.reason] = summary.reasons.get(err.reason, 0) + 1
        except Exception as err:  # noqa: BLE001 - one bad video must not end a job over many videos
            log.exception("%s: unexpected error while extracting", it.path)
            store.write_failure(video, "error", f"{type(err).__name__}: {err}")
            summary.failed += 1
            summary.reasons["error"] = summary.reasons.get("error", 0) + 1
        else:
            store.write(video, seqs, float(probe(it.file).duration))
            summary.extracted += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if index:
        summary.stored, summary.failures = store.build_index(stored_video(it) for it in items)
    summary.seconds = time.perf_counter() - t0
    return summary


def _worker(spec: Mapping[str, Any], todo: list[InferenceItem], out: str, retry_failed: bool,
            store_dtype: str) -> ExtractSummary:
    """One spawned worker: its own encoder over its share of the videos (no index)."""
    from havic.features.registry import build_extractor

    extractor = build_extractor(**spec)
    return extract_to_store(extractor, todo, out, retry_failed=retry_failed, store_dtype=store_dtype,
                            progress=False, index=False)


def _extract_parallel(extractor: Extractor, spec: Mapping[str, Any], todo: list[InferenceItem],
                      items: Sequence[InferenceItem], store: FeatureStore, retry_failed: bool, store_dtype: str,
                      workers: int, summary: ExtractSummary, t0: float, progress: bool) -> ExtractSummary:
    """Share `todo` between this process and ``workers - 1`` spawned ones; a worker that dies ends the run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shares = [todo[k::workers] for k in range(workers)]
    with ProcessPoolExecutor(max_workers=workers - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, dict(spec), share, str(store.root), retry_failed, store_dtype)
                   for share in shares[1:]]
        parts = [extract_to_store(extractor, shares[0], store.root, retry_failed=retry_failed,
                                  store_dtype=store_dtype, progress=progress, index=False)]
        parts += [f.result() for f in futures]
    for part in parts:
        summary.extracted += part.extracted
        summary.failed += part.failed
        for k, v in part.reasons.items():
            summary.reasons[k] = summary.reasons.get(k, 0) + v
    summary.stored, summary.failures = store.build_index(stored_video(it) for it in items)
    summary.seconds = time.perf_counter() - t0
    return summary
