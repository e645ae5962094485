"""A wheel built from the checkout works on its own: console scripts, packaged configs.

The wheel is installed without dependencies into a fresh virtual environment outside the
checkout; the dependencies come from the test's own environment through a path file, so nothing
is downloaded and the installed ``havic`` (not the checkout's editable one) is what runs.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh venv with the checkout's wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", work / "dist",
                 ROOT, cwd=work)
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here (setuptools/wheel missing?): {built.stderr.strip()[-300:]}")
    (wheel,) = (work / "dist").glob("havic-*.whl")
    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip()[-300:]}")
    python = venv / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=work).stdout.strip())
    # Dependencies from this environment; a plain path entry does not activate its editable finder.
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (purelib / "_havic_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    done = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=work)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_console_scripts_run_from_the_wheel(installed: Path, tmp_path: Path):
    res = _run(installed / "havic-infer", "--help", cwd=tmp_path, env=_env())
    assert res.returncode == 0, res.stderr
    assert "--weights" in res.stdout
    res = _run(installed / "havic", "--help", cwd=tmp_path, env=_env())
    assert res.returncode == 0 and "infer" in res.stdout and "train" in res.stdout, res.stderr
    res = _run(installed / "havic", "model-info", "model.dim=64", "model.depth=2", "model.num_heads=2", "model.taps=[1,2]",
               "--kind", "detector", cwd=tmp_path, env=_env())
    assert res.returncode == 0, res.stderr


def test_the_wheel_loads_its_own_default_config(installed: Path, tmp_path: Path):
    code = ("import havic, havic.config as c; cfg = c.load_config(); "
            "print(havic.__file__); print(c.CONFIG_DIR); print(cfg.infer.hop_s, cfg.model.variant)")
    res = _run(installed / "python", "-c", code, cwd=tmp_path, env=_env())
    assert res.returncode == 0, res.stderr
    module_file, config_dir, values = res.stdout.strip().splitlines()
    assert not Path(module_file).resolve().is_relative_to(ROOT), "imported the checkout, not the wheel"
    assert (Path(config_dir) / "defaults.yaml").is_file() and not Path(config_dir).resolve().is_relative_to(ROOT)
    assert values == "0.4 paper"
    listed = _run(installed / "python", "-c", "import tools", cwd=tmp_path, env=_env())
    assert listed.returncode != 0, "the wheel must not install a top-level 'tools' package"
