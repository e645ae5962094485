"""Training and scoring of probes: the Lightning module, padded batches, :func:`train_probe`, :func:`score_probe`.

The paper's recipe (Boldisor et al., CVPR 2026): Adam, lr 1e-3, no weight decay, at most 100
epochs, early stopping on the validation loss (patience 10), the best validation-loss weights
kept, seed 43, shuffled training data, batch size 1. Padded batches give the same scores, loss
and gradients as batch size 1 (masked pooling; tests/test_probes.py), so ``batch_size`` may be
raised to train faster; it is 1 by default to follow the paper's optimisation.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from havic.analysis.pooling import pad_sequences
from havic.analysis.probes import FrameProbe, probe_loss

__all__ = ["ProbeConfig", "as_tensor", "ProbeModule", "ScoredVideo", "SequenceSet", "collate", "score_probe", "train_probe"]

log = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    """Probe and training settings; the defaults are SSR-DFD's.

    Attributes:
        head: ``linear`` or ``transformer``.
        pooling: ``lse``, ``lme``, ``mean`` or ``max``.
        l2_normalize: per-frame L2 normalisation.
        head_options: Transformer head options (d_model, depth, num_heads, ffn_dim, dropout).
        lr: Adam learning rate.
        max_epochs: epoch cap.
        patience: early-stopping patience (epochs without a lower validation loss).
        batch_size: videos per step (1 = the paper).
        seed: seed of initialisation and shuffling.
    """

    head: str = "linear"
    pooling: str = "lse"
    l2_normalize: bool = True
    head_options: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    max_epochs: int = 100
    patience: int = 10
    batch_size: int = 1
    seed: int = 43


def as_tensor(item: Any) -> Tensor:
    """The (T, D) tensor of a tensor or of a FeatureSequence (its ``values``)."""
    return item if isinstance(item, Tensor) else item.values


class SequenceSet(Dataset):
    """Videos as (id, (T, D) features, label) items; features are fetched when an item is asked for.

    Rows with a non-finite value (e.g. HAVIC windows without a face, stored as NaN) are dropped,
    so a video is scored on the frames it has; a video left with no row is skipped by
    :func:`collate`, as SSR-DFD skips videos without features.

    Args:
        features: video id -> (T, D) tensor or FeatureSequence (a lazy mapping such as
            :class:`havic.analysis.inputs.StoreFeatures` works).
        labels: video id -> 1 fake / 0 real (-1 unknown); its keys decide the videos and their order.
    """

    def __init__(self, features: Mapping[str, Any], labels: Mapping[str, int]) -> None:
        missing = [k for k in labels if k not in features]
        if missing:
            raise KeyError(f"{len(missing)} labelled video(s) have no features, e.g. {missing[:3]}")
        self.ids = list(labels)
        self.features = features
        self.labels = {k: int(labels[k]) for k in self.ids}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[str, Tensor, int]:
        k = self.ids[i]
        x = as_tensor(self.features[k]).float()
        return k, x[torch.isfinite(x).all(dim=1)], self.labels[k]


def collate(items: Sequence[tuple[str, Tensor, int]]) -> dict[str, Any] | None:
    """Items -> ``{"id": [B], "x": (B, T_max, D), "is_valid": (B, T_max), "label": (B,)}``.

    Videos without frames are left out; a batch of them only gives None (the steps skip it).
    """
    kept = [it for it in items if it[1].shape[0] > 0]
    if len(kept) < len(items):
        log.warning("skipped %d video(s) without finite frames: %s", len(items) - len(kept),
                    [it[0] for it in items if it[1].shape[0] == 0][:5])
    if not kept:
        return None
    ids, seqs, labels = zip(*kept)
    x, is_valid = pad_sequences(list(seqs))
    return {"id": list(ids), "x": x, "is_valid": is_valid, "label": torch.tensor(labels, dtype=torch.long)}


class ProbeModule(pl.LightningModule):
    """Trains a :class:`FrameProbe` with the loss on (-s, s); logs ``train_loss`` and ``val_loss``.

    Args:
        dim: feature size D.
        config: probe and optimiser settings.
    """

    def __init__(self, dim: int, config: ProbeConfig | None = None) -> None:
        super().__init__()
        self.config = config or ProbeConfig()
        self.save_hyperparameters({"dim": dim, "probe": asdict(self.config)})
        c = self.config
        self.probe = FrameProbe(dim, c.head, c.pooling, c.l2_normalize, **c.head_options)

    def _loss(self, batch: dict[str, Any]) -> Tensor:
        out = self.probe(batch["x"], batch["is_valid"])
        return probe_loss(out.score, batch["label"])

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every video of the batch lacked frames
            return None
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["id"]))
        return loss

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:
            return
        # batch_size weights the epoch mean by videos, so val_loss is the per-video mean whatever the batching
        self.log("val_loss", self._loss(batch), on_step=False, on_epoch=True, batch_size=len(batch["id"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.probe.parameters(), lr=self.config.lr, weight_decay=0.0)


def train_probe(train: SequenceSet, val: SequenceSet, config: ProbeConfig | None = None,
                out_dir: str | Path | None = None, accelerator: str = "cpu") -> tuple[FrameProbe, dict[str, Any]]:
    """Trains a probe with early stopping and returns the best validation-loss weights.

    Args:
        train: training videos.
        val: validation videos (early stopping and checkpoint selection).
        config: settings (default: the paper's).
        out_dir: where Lightning writes its CSV log and best checkpoint (default: a temporary folder).
        accelerator: Lightning accelerator.

    Returns:
        ``(probe in eval mode, info)``; info holds ``best_epoch``, ``best_val_loss``, ``epochs_run``.
    """
    import tempfile

    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    config = config or ProbeConfig()
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"training needs train and val videos, got {len(train)} and {len(val)}")
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dim = int(train[0][1].shape[-1])
    module = ProbeModule(dim, config)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        best = ModelCheckpoint(dirpath=root / "checkpoints", monitor="val_loss", mode="min", save_top_k=1,
                               filename="probe-{epoch:03d}")
        trainer = pl.Trainer(
            max_epochs=config.max_epochs, accelerator=accelerator, devices=1, logger=CSVLogger(root, name="log"),
            callbacks=[EarlyStopping("val_loss", mode="min", patience=config.patience), best],
            enable_progress_bar=False, enable_model_summary=False, deterministic="warn", num_sanity_val_steps=0,
            log_every_n_steps=1)
        gen = torch.Generator().manual_seed(config.seed)
        trainer.fit(module,
                    DataLoader(train, config.batch_size, shuffle=True, collate_fn=collate, generator=gen),
                    DataLoader(val, config.batch_size, shuffle=False, collate_fn=collate))
        ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    epoch = int(ckpt["epoch"])
    info = {"best_epoch": epoch, "best_val_loss": float(best.best_model_score), "epochs_run": trainer.current_epoch}
    log.info("probe: best val_loss %.4f at epoch %d of %d", info["best_val_loss"], epoch, info["epochs_run"])
    return module.probe.eval(), info


@dataclass
class ScoredVideo:
    """One scored video: its id, label (or -1), score s and per-frame logits l_t."""

    video_id: str
    label: int
    score: float
    frame_logits: list[float]


@torch.no_grad()
def score_probe(probe: FrameProbe, features: Mapping[str, Any], labels: Mapping[str, int] | None = None,
                batch_size: int = 16) -> list[ScoredVideo]:
    """Scores videos with a probe (padded batches; the same numbers as one video at a time).

    Videos without finite frames are not scored (they are missing from the result).

    Args:
        probe: a trained probe.
        features: video id -> (T, D) tensor or FeatureSequence.
        labels: video id -> label; its keys choose the videos (default: every video, label -1).
        batch_size: videos per forward pass.
    """
    labels = labels if labels is not None else {k: -1 for k in features}
    data = SequenceSet(features, labels)
    probe.eval()
    out: list[ScoredVideo] = []
    for batch in DataLoader(data, batch_size, shuffle=False, collate_fn=collate):
        if batch is None:
            continue
        res = probe(batch["x"], batch["is_valid"])
        for i, k in enumerate(batch["id"]):
            n = int(batch["is_valid"][i].sum())
            out.append(ScoredVideo(k, int(batch["label"][i]), float(res.score[i]), res.frame_logits[i, :n].tolist()))
    return out
