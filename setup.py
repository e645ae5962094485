"""Installable package for havic.

Version ranges here are compatible ranges; `requirements.txt` pins the exact, tested stack.
GPU users may install their own CUDA build of torch first and then `pip install -e .`.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = {}
exec((ROOT / "havic" / "version.py").read_text(), VERSION)

setup(
    name="havic",
    version=VERSION["__version__"],
    description="HAVIC: holistic audio-visual intrinsic coherence for deepfake detection",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["havic", "havic.*", "tools"]),
    include_package_data=True,
    package_data={"havic": ["configs/*.yaml", "configs/**/*.yaml"]},
    install_requires=[
        "torch>=2.4,<3",
        "torchvision>=0.19",
        "torchaudio>=2.4",
        "timm>=1.0",
        "pytorch-lightning>=2.4,<3",
        "torchmetrics>=1.4",
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
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={
        "console_scripts": [
            "havic-model-info=tools.model_info:main",
        ]
    },
)
