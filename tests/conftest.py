"""Shared fixtures: the `../shared` reference assets and deterministic torch settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
ASSETS_DIR = SHARED_DIR / "assets"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """`../shared/assets` beside the checkout; tests that need it skip where it is absent."""
    if not ASSETS_DIR.is_dir():
        pytest.skip(f"reference assets not found at {ASSETS_DIR} (present in CI, absent in a bare clone)")
    return ASSETS_DIR


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
