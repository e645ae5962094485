"""Optimisation: parameter groups, AdamW, and per-step learning-rate / beta1 schedules.

See docs/official-differences.md#optimisation-and-schedules.

The schedules are pure functions of the optimizer step, wrapped by :class:`StepScheduler`, a
``LambdaLR``-style scheduler that holds no state but the step counter. That makes it

* resumable: the learning rate of step ``s`` is recomputed from ``s`` alone, so loading a
  checkpoint cannot hit the official ``OneCycleLR`` resume crash (``KeyError: 'initial_lr'``,
  docs/official-differences.md#pretraining-schedule);
* safe with gradient accumulation: the schedule length is ``ceil(batches / k) * epochs`` (the
  optimizer also steps on the last, partial accumulation of an epoch) and steps past the end are
  clamped instead of raising (the official ``ValueError``, docs/official-differences.md#pretraining-schedule).

Schedules (``train.schedule``):

* ``official``: ``OneCycleLR`` as the official pretraining uses it: half-cosine warm-up from
  ``lr / start_lr_div`` to ``lr``, cosine decay to ``lr / start_lr_div / final_lr_div``, beta1
  cycled ``betas[0] -> beta1_min`` over the warm-up and back over the decay.
* ``paper``: the same end points with a linear warm-up and a constant beta1 (paper: "linear
  warmup, cosine decay").
* ``warm_restarts``: ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)`` of the official
  fine-tuning, counted in epochs (lr constant within an epoch, as officially stepped) or steps.
* ``constant``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from havic.config import CHOICES

__all__ = [
    "NO_DECAY_NAMES",
    "SCHEDULES",
    "Schedule",
    "StepScheduler",
    "build_optimizer",
    "is_no_decay",
    "onecycle_beta1",
    "onecycle_lr",
    "param_groups",
    "schedule_from_config",
    "split_parameters",
    "steps_per_epoch",
    "warm_restarts_lr",
]

# The choices of train.schedule / train.restart_interval, validated when the configuration loads.
SCHEDULES = CHOICES["train.schedule"]
RESTART_INTERVALS = CHOICES["train.restart_interval"]
# Parameter names (last component) that are tokens or position tables, never decayed when
# ``decay_norm_and_bias`` is false (as MAE/timm exclude them).
NO_DECAY_NAMES = frozenset({"cls_tokens", "pos_embed", "mask_token", "modality"})


# --------------------------------------------------------------------------------------------
# Pure schedule functions
# --------------------------------------------------------------------------------------------


def _anneal(start: float, end: float, pct: float, shape: str) -> float:
    if shape == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _onecycle_phase(step: int, total_steps: int, warmup_steps: float) -> tuple[int, float]:
    """(phase, pct): phase 0 = warm-up, 1 = decay, with OneCycleLR's phase boundaries.

    OneCycleLR ends the warm-up at step ``warmup_steps - 1`` (the peak) and the decay at
    ``total_steps - 1``; steps outside [0, total_steps - 1] are clamped.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    step = min(max(int(step), 0), total_steps - 1)
    peak = float(warmup_steps) - 1.0
    if peak > 0 and step <= peak:
        return 0, step / peak
    start = max(peak, 0.0)
    span = (total_steps - 1) - start
    return 1, (1.0 if span <= 0 else (step - start) / span)


def onecycle_lr(
    step: int, *, peak: float, total_steps: int, warmup_steps: float,
    start_div: float = 25.0, final_div: float = 1e4, warmup_shape: str = "cos",
) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of a one-cycle schedule.

    Equals ``torch.optim.lr_scheduler.OneCycleLR(max_lr=peak, total_steps=total_steps,
    pct_start=warmup_steps / total_steps, div_factor=start_div, final_div_factor=final_div)``
    for ``warmup_shape="cos"``; ``"linear"`` only changes the warm-up ramp. E.g. peak 1.5e-4 with
    100 warm-up steps gives 6e-6 at step 0, 7.91e-5 at step 50 and 1.5e-4 at step 99.

    Args:
        step: optimizer steps taken so far; clamped to [0, total_steps - 1].
        peak: the maximum learning rate.
        total_steps: schedule length in optimizer steps.
        warmup_steps: warm-up length in steps (the peak is reached at step ``warmup_steps - 1``);
            <= 1 starts at the peak.
        start_div: the warm-up starts at ``peak / start_div``.
        final_div: the decay ends at ``peak / start_div / final_div``.
        warmup_shape: "cos" (official) or "linear" (paper).
    """
    if warmup_shape not in ("cos", "linear"):
        raise ValueError(f"warmup_shape must be 'cos' or 'linear', got {warmup_shape!r}")
    initial = peak / start_div
    phase, pct = _onecycle_phase(step, total_steps, warmup_steps)
    if phase == 0:
        return _anneal(initial, peak, pct, warmup_shape)
    return _anneal(peak, initial / final_div, pct, "cos")


def onecycle_beta1(
    step: int, *, total_steps: int, warmup_steps: float, high: float = 0.95, low: float = 0.85,
) -> float:
    """Adam beta1 of step ``step`` under OneCycleLR's momentum cycling: high -> low -> high (cosine)."""
    phase, pct = _onecycle_phase(step, total_steps, warmup_steps)
    return _anneal(high, low, pct, "cos") if phase == 0 else _anneal(low, high, pct, "cos")


def warm_restarts_lr(t: int, *, base: float, period: int, min_lr: float = 1e-9, mult: int = 1) -> float:
    """``CosineAnnealingWarmRestarts`` at integer time ``t`` (epochs or steps).

    The first cycle lasts ``period`` units, each next one ``mult`` times longer; within a cycle the
    rate falls from ``base`` to ``min_lr`` along a half cosine and restarts at ``base``. With
    period 10 the restarts fall on t = 10, 20, 30, ... (epochs 11, 21, 31, ... counted from 1).
    """
    if period < 1 or mult < 1:
        raise ValueError(f"warm restarts need period >= 1 and mult >= 1, got {period} and {mult}")
    t_cur, t_i = max(int(t), 0), period
    while t_cur >= t_i:  # integer arithmetic: exact cycle boundaries, unlike the log formula
        t_cur -= t_i
        t_i *= mult
    return min_lr + (base - min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def steps_per_epoch(num_batches: int, accumulate: int) -> int:
    """Optimizer steps per epoch: the last, partial accumulation of an epoch also steps."""
    if num_batches < 1 or accumulate < 1:
        raise ValueError(f"need num_batches >= 1 and accumulate >= 1, got {num_batches} and {accumulate}")
    return math.ceil(num_batches / accumulate)


@dataclass(frozen=True)
class Schedule:
    """A learning-rate (and optionally beta1) schedule over optimizer steps.

    Attributes:
        kind: one of :data:`SCHEDULES`.
        total_steps: schedule length in optimizer steps (paper / official).
        steps_per_epoch: optimizer steps per epoch (converts epochs to steps).
        warmup_steps: warm-up length in steps (paper / official).
        start_lr_div, final_lr_div: one-cycle end points (paper / official).
        beta1_max, beta1_min: the beta1 cycle (official).
        restart_period: first cycle length in ``restart_interval`` units (warm_restarts).
        restart_mult: cycle length factor (warm_restarts).
        min_lr: floor of each cycle (warm_restarts).
        restart_interval: "epoch" or "step" (warm_restarts).
    """

    kind: str
    total_steps: int = 1
    steps_per_epoch: int = 1
    warmup_steps: float = 0.0
    start_lr_div: float = 25.0
    final_lr_div: float = 1e4
    beta1_max: float = 0.95
    beta1_min: float = 0.85
    restart_period: int = 10
    restart_mult: int = 1
    min_lr: float = 1e-9
    restart_interval: str = "epoch"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule {self.kind!r}: expected one of {list(SCHEDULES)}")
        if self.restart_interval not in RESTART_INTERVALS:
            raise ValueError(f"restart_interval {self.restart_interval!r}: expected one of {list(RESTART_INTERVALS)}")
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError(f"schedule needs total_steps and steps_per_epoch >= 1, got {self.total_steps}, "
                             f"{self.steps_per_epoch}")

    def lr(self, step: int, base_lr: float) -> float:
        """Learning rate of a parameter group whose configured (peak) rate is ``base_lr``."""
        if self.kind == "constant":
            return base_lr
        if self.kind == "warm_restarts":
            t = step // self.steps_per_epoch if self.restart_interval == "epoch" else step
            return warm_restarts_lr(t, base=base_lr, period=self.restart_period, min_lr=self.min_lr,
                                    mult=self.restart_mult)
        shape = "cos" if self.kind == "official" else "linear"
        return onecycle_lr(step, peak=base_lr, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                           start_div=self.start_lr_div, final_div=self.final_lr_div, warmup_shape=shape)

    def beta1(self, step: int) -> float | None:
        """Adam beta1 of ``step``, or None where the schedule leaves beta1 alone."""
        if self.kind != "official":
            return None
        return onecycle_beta1(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                              high=self.beta1_max, low=self.beta1_min)


def schedule_from_config(train_cfg: Any, num_batches: int, accumulate: int) -> Schedule:
    """The schedule of the ``train`` config section for a loader of ``num_batches`` per epoch.

    Its length is ``max_epochs`` epochs; ``trainer.max_steps`` only when ``max_epochs`` is -1 (a
    ``max_steps`` that stops earlier does not shorten the schedule, so a run stopped early and
    resumed follows the same curve).
    """
    spe = steps_per_epoch(num_batches, accumulate)
    max_epochs, max_steps = int(train_cfg.trainer.max_epochs), int(train_cfg.trainer.max_steps)
    if max_epochs > 0:
        total = spe * max_epochs
    elif max_steps > 0:
        total = max_steps
    else:
        raise ValueError("train.trainer: set max_epochs or max_steps (> 0) so the schedule has a length")
    epochs = float(train_cfg.restart_epochs)
    return Schedule(
        kind=train_cfg.schedule,
        total_steps=total,
        steps_per_epoch=spe,
        warmup_steps=float(train_cfg.warmup_epochs) * spe,
        start_lr_div=float(train_cfg.start_lr_div),
        final_lr_div=float(train_cfg.final_lr_div),
        beta1_max=float(train_cfg.betas[0]),
        beta1_min=float(train_cfg.beta1_min),
        restart_period=int(epochs if train_cfg.restart_interval == "epoch" else epochs * spe),
        restart_mult=int(train_cfg.restart_mult),
        min_lr=float(train_cfg.min_lr),
        restart_interval=train_cfg.restart_interval,
    )


class StepScheduler(LRScheduler):
    """Sets every group's learning rate (and beta1, when the schedule cycles it) from the step count.

    Step it once per optimizer step (Lightning: ``interval="step"``). ``last_epoch`` counts optimizer
    steps; the state dict holds nothing but plain numbers, so checkpoints load with
    ``weights_only=True`` and a resumed run recomputes the schedule from its configuration.

    Args:
        optimizer: groups whose ``lr`` is the peak / base rate of that group.
        schedule: the schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
        self.schedule = schedule
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        return [self.schedule.lr(step, base) for base in self.base_lrs]

    def step(self, epoch: int | None = None) -> None:  # noqa: D102 (LRScheduler API)
        super().step(epoch)
        beta1 = self.schedule.beta1(self.last_epoch)
        if beta1 is not None:
            for group in self.optimizer.param_groups:
                group["betas"] = (beta1, *group["betas"][1:])

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "base_lrs": list(self.base_lrs),
                "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: state_dict[k] for k in ("last_epoch", "_step_count", "base_lrs", "_last_lr")})


# --------------------------------------------------------------------------------------------
# Parameter groups and the optimizer
# --------------------------------------------------------------------------------------------


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights, biases (any 0/1-d tensor), tokens and position tables."""
    return param.ndim <= 1 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES


def split_parameters(
    model: nn.Module, pretrained_prefixes: Sequence[str] = (), decay_all: bool = True,
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters by group, in ``named_parameters`` order.

    Groups: ``pretrained`` (names starting with one of ``pretrained_prefixes``) and ``new`` (the
    rest), each split into ``*_no_decay`` when ``decay_all`` is false. Without prefixes every
    parameter is in ``all`` (or ``all_no_decay``). Empty groups are left out.
    """
    prefixes = tuple(p if p.endswith(".") else p + "." for p in pretrained_prefixes)
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = ("pretrained" if name.startswith(prefixes) else "new") if prefixes else "all"
        if not decay_all and is_no_decay(name, param):
            group += "_no_decay"
        groups.setdefault(group, []).append((name, param))
    order = ("all", "all_no_decay", "pretrained", "pretrained_no_decay", "new", "new_no_decay")
    return {g: groups[g] for g in order if g in groups}


def param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, pretrained_prefixes: Sequence[str] = (),
    new_lr_scale: float = 1.0, decay_all: bool = True,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups (``name``, ``params``, ``lr``, ``weight_decay``).

    ``pretrained`` groups learn at ``lr``; ``new`` groups at ``lr * new_lr_scale`` (fine-tuning:
    1e-5 and 1e-4); ``*_no_decay`` groups have weight decay 0.
    """
    out = []
    for name, members in split_parameters(model, pretrained_prefixes, decay_all).items():
        scale = new_lr_scale if name.startswith("new") else 1.0
        out.append({
            "name": name,
            "params": [p for _, p in members],
            "lr": lr * scale,
            "weight_decay": 0.0 if name.endswith("_no_decay") else weight_decay,
        })
    return out


def build_optimizer(groups: Iterable[dict[str, Any]], betas: Sequence[float]) -> torch.optim.AdamW:
    """AdamW over ``groups`` (their own lr and weight decay)."""
    groups = list(groups)
    if not groups:
        raise ValueError("build_optimizer: no trainable parameters")
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=(float(betas[0]), float(betas[1])))
