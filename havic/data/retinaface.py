"""RetinaFace (MobileNet-0.25) face-detection network, its anchors, and loaders for FaceX-Zoo's weights.

The network reproduces the mobilenet0.25 RetinaFace used by FaceX-Zoo (and vendored by HAVIC's
pre-processing) so that its state dict loads with ``strict=True`` under the original key names
(``body.stage1.0.0.weight``, ``fpn.output1.0.weight``, ``ssh1.conv3X3.0.weight``,
``ClassHead.0.conv1x1.weight``, ...).

FaceX-Zoo ships the weights as a legacy (pre-1.6, non-zip) ``torch.save`` of the whole module.
:func:`load_facexzoo_state_dict` reads it through a restricted unpickler that can rebuild tensors and an
inert module skeleton and nothing else, then flattens the skeleton into a state dict.
:func:`convert_facexzoo` writes that state dict once as a plain weights file that loads with
``torch.load(weights_only=True)`` or safetensors.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import os
import pickle
import types
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MIN_SIZES", "STEPS", "VARIANCE", "FaceWeightsError", "RefusedPickleError", "RetinaFace", "RetinaFaceOutput",
    "prior_boxes", "decode_boxes", "check_state_dict", "load_facexzoo_state_dict", "load_retinaface_weights",
    "convert_facexzoo",
]

logger = logging.getLogger(__name__)

# Anchor settings of FaceX-Zoo's face_detection_1.0 model_meta.json (also Pytorch_Retinaface's cfg_mnet).
MIN_SIZES: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, ...] = (8, 16, 32)
VARIANCE: tuple[float, float] = (0.1, 0.2)

# Where FaceX-Zoo's models directory keeps the detector (face_sdk/models/<category>/<name>/).
FACEXZOO_MODEL_DIRS = ("face_detection/face_detection_1.0", "face_detection/face_detection_2.0")
FACEXZOO_PKL = "face_detection_retina.pkl"
WEIGHTS_HINT = (f"data.face.weights (--face-weights) takes FaceX-Zoo's models directory (<dir>/"
                f"{FACEXZOO_MODEL_DIRS[0]}/{FACEXZOO_PKL}, see checkpoints/README.md), the .pkl or a converted "
                "file; data.face.detector=haar (--face-detector haar) needs no weights")


class FaceWeightsError(ValueError):
    """Face-detector weights that cannot be used; the message names the file and the reason."""


class RefusedPickleError(FaceWeightsError, pickle.UnpicklingError):
    """A pickle that references a global not needed to rebuild RetinaFace weights; nothing of it ran."""


# --------------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------------

def _conv_bn(in_ch: int, out_ch: int, stride: int = 1, kernel: int = 3, leaky: float | None = 0.0) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ LeakyReLU unless ``leaky`` is None): keys ``0.*``, ``1.*``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(in_ch: int, out_ch: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1 MobileNetV1 block, each conv followed by BN and LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class _MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25, stages 1-3 only (the classifier is never used by the detector).

    Returns the three stage outputs at strides 8, 16 and 32 with 64, 128 and 256 channels.
    """

    def __init__(self) -> None:
        super().__init__()
        # The backbone uses slope 0.1 everywhere, including the stem.
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2, leaky=0.1),
            _conv_dw(8, 16, 1),
            _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1),
            _conv_dw(32, 64, 2),
            _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return [c1, c2, c3]


class _FPN(nn.Module):
    """Top-down feature pyramid: 1x1 lateral convs, nearest upsampling, 3x3 merge convs."""

    def __init__(self, in_channels: tuple[int, ...], out_ch: int) -> None:
        super().__init__()
        # The original design switches to slope 0.1 for narrow (<= 64 channel) pyramids.
        leaky = 0.1 if out_ch <= 64 else 0.0
        self.output1 = _conv_bn(in_channels[0], out_ch, kernel=1, leaky=leaky)
        self.output2 = _conv_bn(in_channels[1], out_ch, kernel=1, leaky=leaky)
        self.output3 = _conv_bn(in_channels[2], out_ch, kernel=1, leaky=leaky)
        self.merge1 = _conv_bn(out_ch, out_ch, leaky=leaky)
        self.merge2 = _conv_bn(out_ch, out_ch, leaky=leaky)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    """Single-stage context module: parallel 3x3, 5x5 and 7x7 receptive fields (stacked 3x3 convs)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        if out_ch % 4:
            raise ValueError(f"SSH out_ch must be a multiple of 4, got {out_ch}")
        leaky = 0.1 if out_ch <= 64 else 0.0
        self.conv3X3 = _conv_bn(in_ch, out_ch // 2, leaky=None)
        self.conv5X5_1 = _conv_bn(in_ch, out_ch // 4, leaky=leaky)
        self.conv5X5_2 = _conv_bn(out_ch // 4, out_ch // 4, leaky=None)
        self.conv7X7_2 = _conv_bn(out_ch // 4, out_ch // 4, leaky=leaky)
        self.conv7x7_3 = _conv_bn(out_ch // 4, out_ch // 4, leaky=None)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(b5), self.conv7x7_3(self.conv7X7_2(b5))], dim=1)
        return F.relu(out)


class _Head(nn.Module):
    """1x1 conv predicting ``per_anchor`` values for each of ``num_anchors`` anchors per location."""

    def __init__(self, in_ch: int, num_anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(in_ch, num_anchors * per_anchor, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, H*W*num_anchors, per_anchor), row-major over (H, W, anchor)."""
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.size(0), -1, self.per_anchor)


@dataclass
class RetinaFaceOutput:
    """Raw per-anchor predictions, anchors ordered as :func:`prior_boxes`.

    Attributes:
        loc: (B, P, 4) box offsets (cx, cy, log w, log h), encoded with :data:`VARIANCE`.
        logits: (B, P, 2) background/face logits; face probability is ``softmax(logits)[..., 1]``.
        landmarks: (B, P, 10) five-point landmark offsets.
    """

    loc: Tensor
    logits: Tensor
    landmarks: Tensor


class RetinaFace(nn.Module):
    """RetinaFace with a MobileNetV1-0.25 backbone (in_channel 32, out_channel 64, 2 anchors per cell).

    Attribute names follow the original checkpoint keys, hence ``ClassHead``/``BboxHead``/``LandmarkHead``.
    """

    def __init__(self, out_channels: int = 64, num_anchors: int = 2) -> None:
        super().__init__()
        in_channel = 32  # stage-1 output is 2 * in_channel, then 4x and 8x
        stage_channels = (in_channel * 2, in_channel * 4, in_channel * 8)
        self.body = _MobileNetV1Body()
        self.fpn = _FPN(stage_channels, out_channels)
        self.ssh1 = _SSH(out_channels, out_channels)
        self.ssh2 = _SSH(out_channels, out_channels)
        self.ssh3 = _SSH(out_channels, out_channels)
        self.ClassHead = nn.ModuleList([_Head(out_channels, num_anchors, 2) for _ in STEPS])
        self.BboxHead = nn.ModuleList([_Head(out_channels, num_anchors, 4) for _ in STEPS])
        self.LandmarkHead = nn.ModuleList([_Head(out_channels, num_anchors, 10) for _ in STEPS])

    def forward(self, x: Tensor) -> RetinaFaceOutput:
        """Run the detector.

        Args:
            x: (B, 3, H, W) float32, BGR channel order, minus the means (104, 117, 123), not scaled.

        Returns:
            :class:`RetinaFaceOutput` over P = sum_k ceil(H/s_k) * ceil(W/s_k) * 2 anchors.
        """
        feats = self.fpn(self.body(x))
        feats = [self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2])]
        return RetinaFaceOutput(
            loc=torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1),
            logits=torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1),
            landmarks=torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1),
        )


# --------------------------------------------------------------------------------------------------
# Anchors and box decoding
# --------------------------------------------------------------------------------------------------

def prior_boxes(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Anchor boxes of an H x W input, in the order the heads emit them.

    Order: pyramid level, then row i, column j, then the level's min sizes. Values are relative to the
    image (cx, cy, w, h); computed in float64 and rounded once to float32, as the original list-based
    construction does, so that decoded boxes match it bit for bit. Not clipped.

    Returns:
        (P, 4) float32 (cx, cy, w, h).
    """
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")                       # (rows, cols)
        n_sizes = len(sizes)
        centres = torch.stack([cx, cy], dim=-1)[:, :, None, :].expand(rows, cols, n_sizes, 2)
        wh = torch.tensor([[s / width, s / height] for s in sizes], dtype=torch.float64)
        wh = wh.expand(rows, cols, n_sizes, 2)
        levels.append(torch.cat([centres, wh], dim=-1).reshape(-1, 4))
    return torch.cat(levels).to(device=device, dtype=torch.float32)


def decode_boxes(loc: Tensor, priors: Tensor, variance: tuple[float, float] = VARIANCE) -> Tensor:
    """Undo the SSD box encoding.

    Args:
        loc: (..., P, 4) predicted offsets.
        priors: (P, 4) anchors (cx, cy, w, h), relative units.

    Returns:
        (..., P, 4) boxes (x1, y1, x2, y2) in relative units (multiply by (W, H, W, H) for pixels).
    """
    centre = priors[:, :2] + loc[..., :2] * variance[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * variance[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], dim=-1)


# --------------------------------------------------------------------------------------------------
# Weights: validation, FaceX-Zoo legacy pickle, plain files
# --------------------------------------------------------------------------------------------------

def _expected_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = RetinaFace()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state_dict: Mapping[str, Tensor]) -> None:
    """Raise ValueError unless ``state_dict`` has exactly the RetinaFace key set and shapes.

    The message names the missing and unexpected keys and the shape mismatches (first few of each).
    """
    expected = _expected_shapes()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: {tuple(state_dict[k].shape)} != {expected[k]}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:8])}{more}")
        raise ValueError("not a RetinaFace mobilenet0.25 state dict: " + "; ".join(parts))


class _InertModule(nn.Module):
    """Stand-in for a pickled module class: holds the pickled attributes, runs nothing."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            f"{type(self).__name__} is an inert stand-in rebuilt from a pickle; "
            "load its state dict into havic.data.retinaface.RetinaFace instead"
        )


class _InertModuleDict(nn.ModuleDict):
    """Stand-in for torchvision's IntermediateLayerGetter (an nn.ModuleDict subclass)."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("inert stand-in for IntermediateLayerGetter rebuilt from a pickle")


def _no_backend() -> None:
    """Replaces torch.nn.backends.thnn._get_thnn_function_backend, removed from torch long ago."""
    return None


def _make_stand_ins() -> dict[tuple[str, str], object]:
    stand_ins: dict[tuple[str, str], object] = {}
    for module, names in (
        ("torch.nn.modules.conv", ("Conv2d",)),
        ("torch.nn.modules.batchnorm", ("BatchNorm2d",)),
        ("torch.nn.modules.activation", ("LeakyReLU",)),
        ("torch.nn.modules.container", ("Sequential", "ModuleList")),
        ("models.network_def.retinaface_def",
         ("RetinaFace", "MobileNetV1", "FPN", "SSH", "ClassHead", "BboxHead", "LandmarkHead")),
    ):
        for name in names:
            # A distinct name keeps torch's source check from finding the real class of this module.
            stand_ins[(module, name)] = type(f"Pickled{name}", (_InertModule,), {"__module__": __name__})
    stand_ins[("torchvision.models._utils", "IntermediateLayerGetter")] = _InertModuleDict
    stand_ins[("torch.nn.backends.thnn", "_get_thnn_function_backend")] = _no_backend
    stand_ins[("collections", "OrderedDict")] = collections.OrderedDict
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter"):
        stand_ins[("torch._utils", name)] = getattr(torch._utils, name)
    for dtype in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"):
        stand_ins[("torch", f"{dtype}Storage")] = getattr(torch, f"{dtype}Storage")
    return stand_ins


_ALLOWED_GLOBALS = _make_stand_ins()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild tensors and an inert module tree."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickleError(
                f"refused: the pickle references the global '{module}.{name}', which is not needed to rebuild "
                "RetinaFace weights (nothing was run)"
            ) from None


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


# A module-like object for torch.load(pickle_module=...): torch uses its Unpickler and load.
_restricted_pickle = types.ModuleType("havic_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = _restricted_load
_restricted_pickle.UnpicklingError = pickle.UnpicklingError


def _flatten_modules(obj: object, prefix: str, out: dict[str, Tensor]) -> None:
    attrs = vars(obj)
    for group in ("_parameters", "_buffers"):
        for name, value in attrs.get(group, {}).items():
            if value is not None:
                out[prefix + name] = value.detach()
    for name, child in attrs.get("_modules", {}).items():
        if child is not None:
            _flatten_modules(child, f"{prefix}{name}.", out)


def _resolve_facexzoo_pkl(path: Path) -> Path:
    """Accept the .pkl itself, a face_detection_<v> folder, or FaceX-Zoo's models directory."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FaceWeightsError(f"{path}: no such file or folder; {WEIGHTS_HINT}")
    for folder in (path, *(path / d for d in FACEXZOO_MODEL_DIRS)):
        meta_file = folder / "model_meta.json"
        model_file = FACEXZOO_PKL
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            _check_meta(meta, meta_file)
            model_file = meta.get("model_file", FACEXZOO_PKL)
        if (folder / model_file).is_file():
            return folder / model_file
    raise FaceWeightsError(f"{path}: no {FACEXZOO_PKL} in this folder; {WEIGHTS_HINT}")


def _check_meta(meta: dict, meta_file: Path) -> None:
    """The anchors are fixed in this module; refuse a model whose metadata asks for others."""
    for key, ours in (("min_sizes", MIN_SIZES), ("steps", STEPS), ("variance", VARIANCE)):
        if key in meta and meta[key] != json.loads(json.dumps(ours)):
            raise ValueError(f"{meta_file}: {key}={meta[key]} differs from the supported {list(ours)}")


def load_facexzoo_state_dict(models_dir_or_pkl: str | os.PathLike) -> dict[str, Tensor]:
    """Read FaceX-Zoo's RetinaFace weights into a flat, validated state dict, without running its code.

    Args:
        models_dir_or_pkl: FaceX-Zoo's models directory as downloaded
            (``<dir>/face_detection/face_detection_1.0/face_detection_retina.pkl`` + ``model_meta.json``),
            the ``face_detection_1.0`` folder, or the .pkl file.

    Returns:
        300 tensors keyed as :class:`RetinaFace`'s state dict, on the CPU.

    Raises:
        RefusedPickleError: the pickle references a global outside the allow-list (named in the message).
        FaceWeightsError: missing or unreadable; ValueError: not a RetinaFace mobilenet0.25 state
            dict (keys/shapes named).
    """
    pkl = _resolve_facexzoo_pkl(Path(models_dir_or_pkl))
    try:
        with warnings.catch_warnings():
            # Legacy module pickles carry the original class source; torch compares it with the stand-ins'
            # and warns about the (expected) difference.
            warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            obj = torch.load(pkl, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except RefusedPickleError as err:
        raise RefusedPickleError(f"{pkl}: {err}") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, AttributeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FaceWeightsError(f"{pkl}: not readable as FaceX-Zoo's RetinaFace weights ({reason})") from None
    if isinstance(obj, Mapping):
        state_dict = {str(k): v.detach() for k, v in obj.items()}
    elif isinstance(obj, nn.Module):
        state_dict = {}
        _flatten_modules(obj, "", state_dict)
    else:
        raise ValueError(f"{pkl}: expected a pickled module or state dict, got {type(obj).__name__}")
    check_state_dict(state_dict)
    return state_dict


def load_retinaface_weights(source: str | os.PathLike) -> dict[str, Tensor]:
    """Load RetinaFace weights from any supported form.

    Args:
        source: a ``.safetensors`` file, a plain ``torch.save`` of a dict of tensors (zip format, loaded
            with ``weights_only=True``), FaceX-Zoo's legacy ``.pkl``, or FaceX-Zoo's models directory.

    Returns:
        validated state dict for :class:`RetinaFace`.

    Raises:
        FaceWeightsError: naming the file and the reason (:class:`RefusedPickleError` for a refused pickle).
    """
    path = Path(source)
    try:
        if path.is_file() and path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(str(path))
        elif path.is_file() and zipfile.is_zipfile(path):
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state_dict, Mapping):
                raise ValueError(f"expected a dict of tensors, got {type(state_dict).__name__}")
        else:
            return load_facexzoo_state_dict(path)
        check_state_dict(state_dict)
    except FaceWeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors and torch raise many kinds; all mean "unusable"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FaceWeightsError(f"{path}: not usable as RetinaFace weights ({reason})") from None
    return dict(state_dict)


def convert_facexzoo(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert FaceX-Zoo's RetinaFace pickle once into a plain weights file.

    Args:
        src: FaceX-Zoo's models directory or the ``face_detection_retina.pkl`` file.
        dst: output path; ``.safetensors`` writes safetensors, anything else a ``torch.save`` dict of
            tensors that loads with ``torch.load(weights_only=True)``.

    Returns:
        ``dst`` as a Path.
    """
    state_dict = {k: v.contiguous().clone() for k, v in load_facexzoo_state_dict(src).items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state_dict, str(dst), metadata={"source": "FaceX-Zoo face_detection_retina.pkl"})
    else:
        torch.save(state_dict, dst)
    logger.info("wrote %d RetinaFace tensors to %s", len(state_dict), dst)
    return dst
