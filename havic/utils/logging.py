"""Logging that speaks once per job: records from processes other than global rank zero are dropped."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["RankZeroFilter", "global_rank", "get_logger", "setup_logging"]

_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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


def setup_logging(level: int = logging.INFO, file: str | Path | None = None) -> None:
    """Console (and optionally file) handlers on the root logger for command-line tools.

    Handlers carry a :class:`RankZeroFilter`, so every ``havic`` module logs once per job. Calling it
    again replaces the handlers it installed before.
    """
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
