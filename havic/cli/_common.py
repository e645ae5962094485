"""What the commands share: help that shows defaults, exit codes, default device and output folders, signals.

Exit codes, the same for every command (:data:`EXIT_CODES`, printed at the end of every ``--help``):

* 0: done; every input was processed (``havic infer``: every video scored).
* 1: the job ran, but some or all of its items failed (each failure is in the outputs, with its
  reason), or nothing was scored.
* 2: bad input or usage; nothing was done. One line on stderr names the item and the reason.
* 130 / 143: interrupted by SIGINT (Ctrl-C) / SIGTERM; what was finished is on disk
  (``havic infer --resume`` goes on from it).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

__all__ = ["EXIT_BAD_INPUT", "EXIT_CODES", "EXIT_FAILED", "EXIT_OK", "HelpFormatter", "default_device",
           "default_out_dir", "fail", "make_parser", "terminate_cleanly"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_CODES = """exit codes:
  0        done
  1        the job ran, but some or all items failed (each with its reason in the outputs), or nothing was scored
  2        bad input or usage: nothing was done (one line on stderr says why)
  130/143  interrupted by SIGINT/SIGTERM: finished work is kept"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with each option's default, unless it is None, False or empty (then the help says
    where the value comes from) or the help text already names it; descriptions keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS, [], ()):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)".lstrip()
        return text


def make_parser(doc: str | None, **kwargs: object) -> argparse.ArgumentParser:
    """An argument parser whose description is `doc` (a module docstring) and whose help ends with the exit codes."""
    return argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter, epilog=EXIT_CODES,
                                   **kwargs)  # type: ignore[arg-type]


def fail(message: object) -> int:
    """Print ``error: <message>`` to stderr; returns :data:`EXIT_BAD_INPUT`.

    The first line of the message is the error line; further lines (e.g. the keys a strict load
    could not place) follow it, indented.
    """
    first, *details = str(message).strip().splitlines() or [""]
    print("\n".join([f"error: {first}", *(f"    {line.strip()}" for line in details if line.strip())]),
          file=sys.stderr)
    return EXIT_BAD_INPUT


def default_device() -> str:
    """The device every command defaults to: ``cuda`` when available, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_out_dir(command: str) -> Path:
    """``runs/<command>-<YYYYmmdd-HHMMSS>``: where a command writes when no output is named (git-ignored)."""
    return Path("runs") / f"{command}-{datetime.now():%Y%m%d-%H%M%S}"


@contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` so that ``finally`` blocks still write their files.

    Python's default for SIGTERM ends the process at once. The previous handler comes back after
    the block. Outside the main thread (where handlers cannot be set) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
