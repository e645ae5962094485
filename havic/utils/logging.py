"""Logging that speaks once per job and says what matters.

Records from processes other than global rank zero are dropped (:class:`RankZeroFilter`), and
:func:`quiet_console` removes the stack's chatter: Lightning's advertising tips and its lines
restating default settings, and deprecation warnings that the pinned libraries raise from their
own code. Every other warning, Lightning's included, still shows.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path

__all__ = [
    "KNOWN_WARNINGS", "LIGHTNING_CHATTER", "MessageFilter", "RankZeroFilter", "get_logger", "global_rank",
    "quiet_console", "setup_logging",
]

_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Lightning's info lines that advertise products or restate a default setting, not this run's state.
LIGHTNING_CHATTER = (
    r"💡 Tip:",
    r"`Trainer\(\w+=1(\.0)?\)` was configured so",
    r"Loading `train_dataloader` to estimate number of stepping batches",
)
# Where Lightning logs those lines (both package layouts).
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                      "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
# Deprecations raised inside the pinned stack by its own calls, never by havic's: (category, message).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # Lightning's pytree helper builds torch's LeafSpec, which torch deprecated (torch >= 2.10).
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)


def global_rank() -> int:
    """This process's global rank: Lightning's, once a strategy has set it, else the launcher's variables."""
    lightning = sys.modules.get("lightning_fabric.utilities.rank_zero")
    rank = getattr(getattr(lightning, "rank_zero_only", None), "rank", None)
    if rank is not None:
        return int(rank)
    for name in _RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class RankZeroFilter(logging.Filter):
    """Passes records on global rank zero only (the rank is read when the record is emitted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return global_rank() == 0


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are emitted on global rank zero only."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RankZeroFilter) for f in logger.filters):
        logger.addFilter(RankZeroFilter())
    return logger


class MessageFilter(logging.Filter):
    """Drops records whose message matches one of `patterns` (regular expressions, searched)."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.search(record.getMessage()) is None


def quiet_console() -> None:
    """Filter :data:`LIGHTNING_CHATTER` from Lightning's loggers and ignore :data:`KNOWN_WARNINGS`.

    Only those exact messages go: Lightning's own warnings and every other deprecation still show.
    Calling it again adds nothing.
    """
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MessageFilter) for f in logger.filters):
            logger.addFilter(MessageFilter(LIGHTNING_CHATTER))
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def setup_logging(level: int = logging.INFO, file: str | Path | None = None) -> None:
    """Console (and optionally file) handlers on the root logger for command-line tools.

    Handlers carry a :class:`RankZeroFilter`, so every ``havic`` module logs once per job. Calling it
    again replaces the handlers it installed before. The console is quieted (:func:`quiet_console`).
    """
    quiet_console()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_havic", False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(RankZeroFilter())
        handler._havic = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
