"""Training callbacks: reconstruction previews, lexicographic best-checkpoint selection, the last checkpoint.

Checkpoints are written atomically (:class:`AtomicCheckpointIO`): a run killed while saving keeps
its previous file.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import Tensor

from havic.utils.io import atomic_path

__all__ = ["AtomicCheckpointIO", "BestCheckpoint", "LastCheckpoint", "ReconstructionPreview", "paste_reconstruction",
           "reconstruction_errors", "render_preview"]

# Pretraining terms shown in a preview's title when the step logged them (train/<name>).
PREVIEW_TERMS = ("loss", "rec_video", "rec_audio", "contrastive", "cross_video", "cross_audio")

log = logging.getLogger(__name__)


def _frame_ids(num_frames: int, count: int) -> list[int]:
    count = max(1, min(count, num_frames))
    return sorted({round(i * (num_frames - 1) / max(count - 1, 1)) for i in range(count)})


def paste_reconstruction(masked: Tensor, recon: Tensor) -> Tensor:
    """The visible input where ``masked`` has values, the reconstruction where it is NaN (same shapes)."""
    return masked.where(~masked.isnan(), recon)


def reconstruction_errors(tensors: dict[str, Tensor]) -> dict[str, float]:
    """Mean squared error of the first clip's final-layer reconstruction over its masked-out values.

    This is the paper's reconstruction loss (Eq. 1: masked tokens) of the last decoder layer for
    the clip shown, against the same targets: [0, 1] pixels and the normalised fbank.

    Returns:
        ``{"video": mse, "audio": mse}`` (NaN for a modality with nothing masked).
    """
    out = {}
    for name in ("video", "audio"):
        hidden = tensors[f"{name}_masked"][0].isnan()
        diff = (tensors[f"{name}_recon"][0] - tensors[name][0])[hidden]
        out[name] = float(diff.double().pow(2).mean()) if diff.numel() else math.nan
    return out


def render_preview(tensors: dict[str, Tensor], path: str | Path, num_frames: int = 4, title: str = "") -> Path:
    """Write a PNG: rows input / masked / reconstruction / visible + reconstruction; video frames, then the spectrogram.

    The last row pastes the reconstruction into the masked-out patches of the input, the usual
    way to read a masked autoencoder (only masked patches are reconstructed by the paper's loss).
    The title ends with :func:`reconstruction_errors` of the clip shown.

    Args:
        tensors: :meth:`havic.lit.pretrain.PretrainModule.reconstruct` output; the first clip is shown.
        path: the PNG to write (parents are created).
        num_frames: video frames shown (evenly spaced).
        title: figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = (("input", ""), ("masked", "_masked"), ("reconstruction", "_recon"), ("visible + rec.", "_filled"))
    tensors = dict(tensors)
    for name in ("video", "audio"):
        tensors[f"{name}_filled"] = paste_reconstruction(tensors[f"{name}_masked"], tensors[f"{name}_recon"])
    frames = _frame_ids(tensors["video"].shape[2], num_frames)
    fig = Figure(figsize=(1.6 * len(frames) + 3.2, 1.6 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows), len(frames) + 2)
    audio_lim = np.nanpercentile(tensors["audio"][0].numpy(), [1, 99])
    for r, (label, suffix) in enumerate(rows):
        video = tensors[f"video{suffix}"][0].clamp(0, 1).permute(1, 2, 3, 0).numpy()  # (T, H, W, 3), NaN kept
        for c, t in enumerate(frames):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(np.nan_to_num(video[t], nan=0.5), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
        ax = fig.add_subplot(grid[r, len(frames):])
        spec = tensors[f"audio{suffix}"][0].numpy().T  # (F, T): mel up, time right
        ax.imshow(np.ma.masked_invalid(spec), origin="lower", aspect="auto", cmap="magma",
                  vmin=audio_lim[0], vmax=audio_lim[1], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title("fbank (time →, mel ↑)", fontsize=8)
    errors = reconstruction_errors(tensors)
    shown = (f"this clip, last decoder layer, masked patches: MSE video {errors['video']:.4f}, "
             f"audio {errors['audio']:.4f}")
    fig.suptitle(f"{title}\n{shown}" if title else shown, fontsize=9)
    fig.savefig(path)
    return path


class ReconstructionPreview(pl.Callback):
    """Every ``every_n_steps`` optimizer steps, render :func:`render_preview` of the current batch.

    The PNG goes to ``out_dir/step_<N>.png`` and, for loggers with ``log_image`` (W&B), to the
    logger as ``preview/reconstruction``. Runs on global rank zero only, in eval mode with the
    fixed validation masks.

    Args:
        out_dir: folder of the PNGs.
        every_n_steps: interval in optimizer steps; 0 disables.
        num_frames: video frames shown.
    """

    def __init__(self, out_dir: str | Path, every_n_steps: int, num_frames: int = 4) -> None:
        self.out_dir = Path(out_dir)
        self.every_n_steps = int(every_n_steps)
        self.num_frames = int(num_frames)
        self._last_step = -1
        self.written: list[Path] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches end on the same global step: render once.
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        if not trainer.is_global_zero:
            return
        tensors = pl_module.reconstruct(batch, num=1)
        metrics = getattr(trainer, "callback_metrics", {})
        terms = [f"{k} {float(metrics[f'train/{k}']):.4f}" for k in PREVIEW_TERMS if f"train/{k}" in metrics]
        title = f"step {step}" + (f", batch losses: {', '.join(terms)}" if terms else "")
        path = render_preview(tensors, self.out_dir / f"step_{step:07d}.png", self.num_frames, title=title)
        self.written.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="preview/reconstruction", images=[str(path)], step=step)


class BestCheckpoint(pl.Callback):
    """Save ``dirpath/filename`` whenever the validation metrics improve lexicographically.

    ``keys`` lists ``(metric, "max" | "min")`` in priority order, e.g. ``[("val/auc", "max"),
    ("val/acc", "max")]``: a higher AUC wins, an equal AUC is decided by ACC (which a single
    monitored quantity cannot express). NaN counts as the worst value. The metrics must be equal
    on all ranks (synced or computed from gathered data), as every rank takes part in the save.

    Args:
        dirpath: checkpoint folder.
        keys: the metrics and their directions.
        filename: checkpoint file name.
    """

    def __init__(self, dirpath: str | Path, keys: Sequence[tuple[str, str]], filename: str = "best.ckpt") -> None:
        for name, mode in keys:
            if mode not in ("max", "min"):
                raise ValueError(f"BestCheckpoint: mode of {name!r} must be 'max' or 'min', got {mode!r}")
        if not keys:
            raise ValueError("BestCheckpoint needs at least one metric")
        self.dirpath = Path(dirpath)
        self.keys = [(str(k), str(m)) for k, m in keys]
        self.filename = filename
        self.best: tuple[float, ...] | None = None
        self.best_metrics: dict[str, float] = {}
        self.best_epoch = -1

    @property
    def state_key(self) -> str:
        return f"BestCheckpoint{self.keys}"

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def score(self, metrics: dict[str, Any]) -> tuple[float, ...] | None:
        """The comparable key of ``metrics`` (larger is better), None if a metric is missing."""
        if any(name not in metrics for name, _ in self.keys):
            return None
        key = []
        for name, mode in self.keys:
            value = float(metrics[name])
            key.append(-math.inf if math.isnan(value) else (value if mode == "max" else -value))
        return tuple(key)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = self.score(trainer.callback_metrics)
        if score is None or (self.best is not None and score <= self.best):
            return
        self.best = score
        self.best_metrics = {name: float(trainer.callback_metrics[name]) for name, _ in self.keys}
        self.best_epoch = trainer.current_epoch
        trainer.save_checkpoint(self.path, weights_only=False)
        log.info("new best %s at epoch %d -> %s", self.best_metrics, self.best_epoch, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": None if self.best is None else list(self.best), "best_metrics": dict(self.best_metrics),
                "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best = state_dict.get("best")
        self.best = None if best is None else tuple(float(v) for v in best)
        self.best_metrics = dict(state_dict.get("best_metrics", {}))
        self.best_epoch = int(state_dict.get("best_epoch", -1))


class LastCheckpoint(pl.Callback):
    """Keep ``dirpath/filename`` at the newest step: after every validation, every epoch, and when training ends.

    Saving when training ends as well means that a run always leaves its last state, also when no
    validation ran (e.g. ``check_val_every_n_epoch`` above ``max_epochs``) or it stopped in the
    middle of an epoch; a step already saved is not saved again.

    Args:
        dirpath: checkpoint folder.
        filename: checkpoint file name.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath)
        self.filename = filename
        self._saved_step = -1

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or trainer.global_step == self._saved_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through a temporary file renamed over the target (:func:`atomic_path`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
