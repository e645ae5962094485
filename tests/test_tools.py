"""Command-line tools run as users run them (a subprocess through the installed package)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from havic.cli import COMMANDS
from havic.cli import main as havic_main
from havic.cli._common import default_device

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
    assert res.returncode == 2 and "model.dimm" in res.stderr


def test_model_info_bad_input_exits_2_in_one_line():
    res = run_tool("tools/model_info.py", "model.dimm=3")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_help_shows_defaults_and_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as stop:
        havic_main([command, "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 done 1 the job ran, but some or all items failed" in text
    assert "2 bad input or usage: nothing was done" in text
    expected = {"infer": f"(default: {default_device()})", "evaluate": "(default: ['category'])",
                "preprocess": "(default: 1)", "build-manifest": "(default: none)", "model-info": "(default: both)",
                "benchmark": "intra-op threads (default 2)", "demo": "(default: runs/demo-<timestamp>)"}
    if command in expected:
        assert expected[command] in text


def test_infer_and_evaluate_share_one_device_default(capsys):
    for command in ("infer", "evaluate"):
        with pytest.raises(SystemExit):
            havic_main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"--device DEVICE where the model runs: cuda where available, else cpu (default: {default_device()})" \
            in text
