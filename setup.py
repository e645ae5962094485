"""Installable package for havic.

Version ranges here are compatible ranges; `requirements.txt` pins the exact, tested stack.
GPU users may install their own CUDA build of torch first and then `pip install -e .`.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION, CLI = {}, {}
exec((ROOT / "havic" / "version.py").read_text(), VERSION)
exec((ROOT / "havic" / "cli" / "__init__.py").read_text(), CLI)  # standard library only: COMMANDS
# `havic <command>` and one `havic-<command>` per command (the same main functions as tools/*.py).
CONSOLE_SCRIPTS = ["havic=havic.cli:main"] + [
    f"havic-{name}=havic.cli.{module}:main" for name, (module, _) in CLI["COMMANDS"].items()
]

setup(
    name="havic",
    version=VERSION["__version__"],
    description="HAVIC: holistic audio-visual intrinsic coherence for deepfake detection",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # The library and its applications (havic.cli, havic.demo, havic.benchmarks); tools/*.py are
    # checkout-only scripts over havic.cli and are not installed.
    packages=find_packages(include=["havic", "havic.*"]),
    package_data={"havic": ["configs/*.yaml", "configs/**/*.yaml"]},
    install_requires=[
        "torch>=2.4,<3",
        "torchvision>=0.19",
        "torchaudio>=2.4",
        "timm>=1.0",
        "pytorch-lightning>=2.4,<3",
        "einops>=0.8",
        "omegaconf>=2.3",
        "wandb>=0.17",
        "scikit-learn>=1.4",
        "av>=12",
        "opencv-python-headless>=4.8,<5",
        "scikit-image>=0.22",
        "numpy>=1.26",
        "safetensors>=0.4",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "huggingface_hub>=0.34",  # hf:// weights (havic.checkpoints.hub) and the `hf` upload command
        "transformers>=5.0,<6",  # Wav2Vec2 / CLIP / VideoMAE feature extractors (havic.features.hf)
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
