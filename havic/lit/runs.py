"""One training run: folder, data, module, weights, loggers, callbacks, trainer and export.

``tools/train.py`` is ``prepare_run(cfg)``, ``trainer.fit`` and ``finish_run``. A run folder
``<train.run_dir>/<name>-<timestamp>/`` holds ``config.yaml`` (the resolved configuration),
``train.log``, ``csv/metrics.csv``, ``wandb/`` (offline unless ``WANDB_MODE`` says otherwise),
``checkpoints/{last,best}.ckpt``, ``previews/`` and ``export/{best,last}.safetensors``. Every run ends
with ``checkpoints/last.ckpt`` and ``export/last.safetensors`` (:class:`~havic.lit.callbacks.LastCheckpoint`),
or fails; ``best`` exists once a validation ran. Checkpoints are written atomically.

Weights files (``train.init_from``, read by :mod:`havic.checkpoints.transfer`, never unpickling
objects): a weights file or Lightning checkpoint of this project (its configuration must agree with
the run's network structure), or any plain state dict in our parameter names (e.g. a conversion).
Loading is strict with explicit lists: pretraining must find every pretrainer tensor; fine-tuning
must find every encoder and fusion tensor, ignores the pretraining-only modules (decoders,
translators) and leaves the new modules (pools, layer weights, heads) fresh unless the file has them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from havic.checkpoints import check_compatible, check_torch_file, export_checkpoint, init_weights, read_init_weights
from havic.config import ConfigError, save_config, to_container
from havic.lit.base import HavicModule
from havic.lit.callbacks import AtomicCheckpointIO, BestCheckpoint, LastCheckpoint, ReconstructionPreview
from havic.lit.finetune import FinetuneModule
from havic.lit.pretrain import PretrainModule
from havic.utils.io import remove_stale_temps
from havic.utils.logging import global_rank

__all__ = [
    "MODULES", "Run", "accumulation", "build_datamodule", "build_module", "build_trainer", "check_train_config",
    "finish_run", "make_run_dir", "prepare_run", "requested_world_size", "resolve_strategy",
]

log = logging.getLogger(__name__)

# train.stage -> its LightningModule; the stages are havic.config.CHOICES["train.stage"], checked at load.
MODULES: dict[str, type[HavicModule]] = {"pretrain": PretrainModule, "finetune": FinetuneModule}
RUN_DIR_ENV = "HAVIC_RUN_DIR"  # shared with the processes Lightning launches for DDP


def check_train_config(cfg: DictConfig) -> None:
    """Required values and consistency of the ``train`` section (raises :class:`ConfigError`).

    The choices (``train.stage``, ``train.schedule``, ...) are checked when the configuration loads.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required value(s) not set: {', '.join(missing)} (give them as key=value)")
    tc = cfg.train
    if tc.synthetic_clips < 0:
        raise ConfigError(f"train.synthetic_clips={tc.synthetic_clips}: must be >= 0")
    if tc.synthetic_clips > 0 and cfg.data.cache_dir is not None:
        raise ConfigError(f"both train.synthetic_clips={tc.synthetic_clips} and data.cache_dir are set; "
                          "set train.synthetic_clips=0 to train on the cache")
    if tc.global_batch_size is not None and tc.global_batch_size < 1:
        raise ConfigError(f"train.global_batch_size={tc.global_batch_size}: must be >= 1 or null")
    if len(tc.betas) != 2:
        raise ConfigError(f"train.betas={list(tc.betas)}: expected two values")
    if tc.stage == "finetune" and not tc.init_from and not tc.resume and not tc.allow_scratch:
        raise ConfigError("fine-tuning without pretrained weights: set train.init_from=<pretraining weights>, or "
                          "train.allow_scratch=true to start the encoders at random (the w/o HCP ablation)")
    for key in ("init_from", "resume"):
        path = tc[key]
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"train.{key}={path!r}: file not found")
    if tc.resume is not None:
        # Left by the run killed while saving: its checkpoints (and, in a run folder, its exports).
        folder = Path(tc.resume).parent
        in_run = folder.name == "checkpoints"
        remove_stale_temps(folder.parent if in_run else folder, recursive=in_run)
        check_torch_file(tc.resume)  # Lightning reads it later: refuse a damaged or unsafe file here, in one line


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


# -- world, batch, strategy ---------------------------------------------------------------------


def requested_world_size(cfg: DictConfig) -> int:
    """Processes the trainer settings ask for: devices per node x nodes ("auto" / -1: all GPUs, else 1)."""
    devices = _plain(cfg.train.trainer.devices)
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        n = int(devices)
    elif isinstance(devices, int):
        n = devices
    else:
        n = -1
    if n == -1:
        gpu = cfg.train.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        n = torch.cuda.device_count() if gpu else 1
    return max(n, 1) * int(cfg.train.trainer.num_nodes)


def accumulation(global_batch: int | None, per_device: int, world: int) -> int:
    """Micro-batches per optimizer step so that per_device x world x k = global_batch."""
    if global_batch is None:
        return 1
    per_step = per_device * world
    if global_batch % per_step:
        raise ConfigError(
            f"train.global_batch_size={global_batch} is not a multiple of data.batch_size x devices x nodes = "
            f"{per_device} x {world} = {per_step}"
        )
    return global_batch // per_step


def needs_unused_parameter_search(cfg: DictConfig) -> bool:
    """Whether some parameters get no gradient (a zero loss weight leaves its modules unused)."""
    if cfg.train.stage == "pretrain":
        return cfg.loss.rec_weight == 0 or cfg.loss.cross_weight == 0
    return bool(cfg.model.aux_heads) and (cfg.loss.audio_head_weight == 0 or cfg.loss.video_head_weight == 0)


def resolve_strategy(cfg: DictConfig, world: int) -> str:
    """``auto`` becomes ``ddp`` (with unused-parameter search if needed) for several processes."""
    strategy = cfg.train.trainer.strategy
    if strategy != "auto" or world == 1:
        return strategy
    return "ddp_find_unused_parameters_true" if needs_unused_parameter_search(cfg) else "ddp"


# -- run folder ---------------------------------------------------------------------------------


def make_run_dir(cfg: DictConfig, now: datetime | None = None) -> Path:
    """``<run_dir>/<name>-<YYYYmmdd-HHMMSS>``, the same folder in every process of the job.

    A folder in ``$HAVIC_RUN_DIR`` wins (set by the first process for the processes Lightning
    launches); under an external launcher the job id (SLURM, torchrun) replaces the timestamp so
    that all ranks agree.
    """
    if os.environ.get(RUN_DIR_ENV):
        path = Path(os.environ[RUN_DIR_ENV])
    else:
        name = cfg.train.name or cfg.train.stage
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID", "none")
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S") if job == "none" else f"job{job}"
        path = Path(cfg.train.run_dir) / f"{name}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- building blocks ----------------------------------------------------------------------------


def build_module(cfg: DictConfig) -> HavicModule:
    """The stage's LightningModule, initialised from ``train.init_from`` when set."""
    module = MODULES[cfg.train.stage](cfg)
    if cfg.train.stage == "finetune" and not cfg.train.init_from:
        log.info("fine-tuning from scratch (train.allow_scratch): encoders start at random")
    if cfg.train.init_from:
        state_dict, source_cfg = read_init_weights(cfg.train.init_from)
        if source_cfg is not None:
            check_compatible(source_cfg.model, cfg.model)
        report = init_weights(module.model, state_dict, cfg.train.stage)
        log.info("initialised from %s: %s", cfg.train.init_from, report.summary())
    return module


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """Synthetic clips when ``train.synthetic_clips > 0``, else the clip cache ``data.cache_dir``."""
    if cfg.train.synthetic_clips > 0:
        from havic.data.synthetic_clips import SyntheticDataModule

        log.warning("training on %d SYNTHETIC clips (train.synthetic_clips): a smoke run, not real data",
                    cfg.train.synthetic_clips)
        return SyntheticDataModule(cfg, cfg.train.stage, cfg.train.synthetic_clips)
    if cfg.data.cache_dir is None:
        raise ConfigError("data.cache_dir is not set (build it with tools/preprocess.py), "
                          "or set train.synthetic_clips for a smoke run")
    from havic.data.datamodule import HavicDataModule

    return HavicDataModule(cfg, cfg.train.stage)


def _loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(run_dir), name="", version="csv")]
    if cfg.train.wandb:
        from pytorch_lightning.loggers import WandbLogger

        kwargs: dict[str, Any] = {"project": cfg.train.wandb_project, "name": run_dir.name, "save_dir": str(run_dir)}
        if "WANDB_MODE" not in os.environ:
            kwargs["offline"] = True  # never reach for the network unless asked to
        loggers.insert(0, WandbLogger(**kwargs))
    return loggers


def _callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    ckpt_dir = run_dir / "checkpoints"
    best_keys = [("val/loss", "min")] if cfg.train.stage == "pretrain" else [("val/auc", "max"), ("val/acc", "max")]
    callbacks: list[pl.Callback] = [
        LastCheckpoint(ckpt_dir),
        BestCheckpoint(ckpt_dir, best_keys),
        LearningRateMonitor(logging_interval="step", log_momentum=True, log_weight_decay=False),
    ]
    if cfg.train.stage == "pretrain" and cfg.train.preview_every_n_steps > 0:
        callbacks.append(ReconstructionPreview(run_dir / "previews", cfg.train.preview_every_n_steps,
                                               cfg.train.preview_frames))
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, world: int, accumulate: int) -> pl.Trainer:
    """The Lightning trainer of ``train.trainer``, with the run's loggers and callbacks."""
    t = cfg.train.trainer
    return pl.Trainer(
        accelerator=t.accelerator, devices=_plain(t.devices), num_nodes=t.num_nodes,
        strategy=resolve_strategy(cfg, world), precision=_plain(t.precision), deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val, gradient_clip_algorithm="norm", accumulate_grad_batches=accumulate,
        max_epochs=t.max_epochs, max_steps=t.max_steps, val_check_interval=_plain(t.val_check_interval),
        check_val_every_n_epoch=t.check_val_every_n_epoch, limit_train_batches=_plain(t.limit_train_batches),
        limit_val_batches=_plain(t.limit_val_batches), num_sanity_val_steps=t.num_sanity_val_steps,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.enable_progress_bar,
        logger=_loggers(cfg, run_dir), callbacks=_callbacks(cfg, run_dir), default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,  # LastCheckpoint and BestCheckpoint save; no default ModelCheckpoint
    )


def validation_warning(cfg: DictConfig) -> str | None:
    """Why a run will never validate (so writes no best checkpoint), or None."""
    t = cfg.train.trainer
    if _plain(t.limit_val_batches) in (0, 0.0):
        return "train.trainer.limit_val_batches=0"
    if t.max_epochs is not None and 0 < t.max_epochs < t.check_val_every_n_epoch and t.max_steps in (None, -1):
        return (f"train.trainer.check_val_every_n_epoch={t.check_val_every_n_epoch} is above "
                f"train.trainer.max_epochs={t.max_epochs}")
    return None


@dataclass
class Run:
    """Everything a training run needs; ``summary`` is what ``tools/train.py`` prints at start."""

    cfg: DictConfig
    run_dir: Path
    module: HavicModule
    datamodule: pl.LightningDataModule
    trainer: pl.Trainer
    world: int
    accumulate: int

    @property
    def effective_batch(self) -> int:
        return int(self.cfg.data.batch_size) * self.world * self.accumulate

    def summary(self) -> str:
        tc = self.cfg.train
        lrs = f"lr {tc.lr:g}" + (f", new modules {tc.lr * tc.head_lr_scale:g}" if tc.stage == "finetune" else "")
        source = f"{tc.synthetic_clips} synthetic clips" if tc.synthetic_clips else str(self.cfg.data.cache_dir)
        return "\n".join([
            f"stage {tc.stage}, run folder {self.run_dir}",
            f"data: {source}",
            f"world size {self.world} ({self.trainer.strategy.__class__.__name__}), precision "
            f"{tc.trainer.precision}",
            f"effective batch {self.effective_batch} = {self.cfg.data.batch_size} per device x {self.world} "
            f"process(es) x {self.accumulate} accumulation step(s)",
            f"{lrs}, schedule {tc.schedule}, weight decay {tc.weight_decay:g}",
        ])


def prepare_run(cfg: DictConfig) -> Run:
    """Seed, build module and data, create the run folder (config.yaml) and the trainer for ``cfg``."""
    check_train_config(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    world = requested_world_size(cfg)
    accumulate = accumulation(cfg.train.global_batch_size, int(cfg.data.batch_size), world)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    run_dir = make_run_dir(cfg)  # only once everything above is known to work
    if world > 1:
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    if global_rank() == 0:
        save_config(cfg, run_dir / "config.yaml")
    trainer = build_trainer(cfg, run_dir, world, accumulate)
    if trainer.world_size != world:
        raise ConfigError(f"the trainer runs {trainer.world_size} process(es), the configuration asks for {world}; "
                          "set train.trainer.devices / num_nodes to match the launcher")
    for logger in trainer.loggers:
        logger.log_hyperparams(to_container(cfg))
    reason = validation_warning(cfg)
    if reason:
        log.warning("this run never validates (%s): no best checkpoint; it saves checkpoints/last.ckpt and "
                    "export/last.safetensors", reason)
    return Run(cfg, run_dir, module, datamodule, trainer, world, accumulate)


def finish_run(run: Run) -> dict[str, Path]:
    """Export the best and last weights (``train.export``) on global rank zero; returns the files.

    Raises:
        RuntimeError: the run left no last checkpoint (training did not run to its end).
    """
    if not run.trainer.is_global_zero:
        return {}
    last = run.run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RuntimeError(f"{run.run_dir}: training ended without a last checkpoint ({last})")
    if not run.cfg.train.export:
        return {}
    out = {}
    for name in ("best", "last"):
        ckpt = run.run_dir / "checkpoints" / f"{name}.ckpt"
        if ckpt.is_file():
            out[name] = export_checkpoint(ckpt, run.run_dir / "export" / f"{name}.safetensors")
        else:
            log.warning("no %s: no validation ran, so only the last weights are exported", ckpt)
    return out

