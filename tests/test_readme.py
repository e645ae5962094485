"""The README and the project files a new user reads: links that resolve, commands that exist, licence, citation."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

import havic
from havic.cli import COMMANDS
from havic.data.adapters import ADAPTERS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors() -> set[str]:
    body = re.sub(r"```.*?```", "", README, flags=re.S)  # '#' lines inside code blocks are not headings
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", body, flags=re.M)}


def test_every_section_link_and_pointer_resolves():
    targets = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert targets and not targets - anchors()
    # Pointers like `README "Set-up and tests"` in the project's own files.
    files = [ROOT / "requirements.txt", ROOT / "setup.py", ROOT / "Makefile", *ROOT.glob("havic/**/*.py")]
    pointers = {(f.name, m) for f in files for m in re.findall(r'README (?:section )?"([^"\n]+)"', f.read_text())}
    assert {(f, p) for f, p in pointers if slug(p) not in anchors()} == set()
    for target in re.findall(r"\]\((?!https?://|#)([^)]+)\)", README):
        assert (ROOT / target.split("#")[0]).exists(), target


def test_every_dataset_command_names_an_adapter():
    used = re.findall(r"(?:build_manifest\.py|havic build-manifest) ([\w-]+)", README)
    assert "hifi-avdf" in used and set(used) - {"DATASET"} <= set(ADAPTERS)


def test_the_readme_links_the_paper_code_weights_and_data_sources():
    for url in ("https://arxiv.org/abs/2603.23960", "https://github.com/tuffy-studio/HAVIC",
                "https://huggingface.co/JielunPeng/HAVIC", "https://github.com/JDAI-CV/FaceX-Zoo",
                "https://github.com/facebookresearch/AudioMAE", "https://github.com/ControlNet/MARLIN",
                "https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs2.html",
                "https://github.com/DASH-Lab/FakeAVCeleb",
                "https://deepbrainai-research.github.io/kodf/", "https://huggingface.co/datasets/JielunPeng/HiFi-AVDF"):
        assert f"({url})" in README, url


def test_the_readme_shows_the_api_and_every_command():
    assert "import havic" in README and "havic.load_detector(" in README and "det.score(" in README
    assert "det.score_many(" in README and "det.features(" in README
    table = README[README.index("## Command line"):README.index("## Weights and datasets")]
    for command in COMMANDS:
        assert f"`havic {command}" in table or f"havic {command}`" in table, command
    for module in {module for module, _ in COMMANDS.values()}:
        assert (ROOT / "tools" / f"{module}.py").is_file(), module  # the checkout's script equivalents


def test_licence_and_citation_files_agree_with_the_package():
    setup = (ROOT / "setup.py").read_text()
    assert 'license="MIT"' in setup
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "THE SOFTWARE IS PROVIDED \"AS IS\"" in licence
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["version"] == havic.__version__
    paper = cff["preferred-citation"]
    assert paper["type"] == "conference-paper" and paper["url"] == "https://arxiv.org/abs/2603.23960"
    assert paper["title"] in README and paper["year"] == 2026


def test_the_havic_command_lists_export_and_runs_its_help():
    res = subprocess.run([sys.executable, "-m", "havic", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and re.search(r"^  export +write a folder to publish", res.stdout, flags=re.M)
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "--metrics" in res.stdout and "(default: best)" in res.stdout
