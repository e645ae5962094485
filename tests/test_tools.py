"""Command-line tools run as users run them (a subprocess through the installed package)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_model_info_prints_counts_per_module():
    res = run_tool("tools/model_info.py", "configs/model/official.yaml", "--kind", "detector")
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line.strip()}
    assert lines["video_encoder"][0] == "86,233,344"
    assert lines["total"][0] == "197,671,189"


def test_model_info_rejects_a_mistyped_key():
    res = run_tool("tools/model_info.py", "model.dimm=3")
    assert res.returncode != 0 and "model.dimm" in res.stderr
