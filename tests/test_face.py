"""Face detection (RetinaFace from FaceX-Zoo's weights, Haar), face cropping on a real photo, the streaming track.

Reference numbers, measured once with FaceX-Zoo's RetinaFace weights and OpenCV's
`haarcascade_frontalface_default.xml` (boxes x1, y1, x2, y2): on `skimage.data.astronaut()` resized
to 224 px, RetinaFace finds [78, 27, 118, 75] with score 0.993 and Haar [74, 25, 123, 74]; on the
photo resized to 720 x 720 and pasted in the middle of a grey 1280 x 720 canvas, RetinaFace finds
[530, 83, 661, 251] with score 1.0.
"""
from __future__ import annotations

import itertools
import math
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from havic.data.errors import MediaError
from havic.data.face import (
    CropResult,
    FaceCropper,
    FaceDetector,
    FaceTrack,
    RetinaFaceDetector,
    build_detector,
    expand_boxes,
)
from havic.data.retinaface import (
    MIN_SIZES,
    STEPS,
    RetinaFace,
    check_state_dict,
    convert_facexzoo,
    decode_boxes,
    load_facexzoo_state_dict,
    load_retinaface_weights,
    prior_boxes,
)

FACEXZOO_REL = "facexzoo/models"
PKL_REL = "facexzoo/models/face_detection/face_detection_1.0/face_detection_retina.pkl"
BOX_224 = np.array([78, 27, 118, 75], dtype=np.float64)
BOX_720P = np.array([530, 83, 661, 251], dtype=np.float64)
HAAR_224 = np.array([74, 25, 123, 74], dtype=np.float64)
FACE_REGION_224 = np.array([65, 15, 130, 90])          # generous hand-drawn bounds of the astronaut's face
FACE_REGION_720P = np.array([510, 60, 690, 280])


# ---------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def astronaut_224() -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (224, 224), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def astronaut_720p() -> np.ndarray:
    from skimage import data

    canvas = np.full((720, 1280, 3), 128, dtype=np.uint8)
    canvas[:, 280:1000] = cv2.resize(data.astronaut(), (720, 720), interpolation=cv2.INTER_LINEAR)
    return canvas


@pytest.fixture(scope="module")
def facexzoo_detector(assets_dir) -> RetinaFaceDetector:
    return RetinaFaceDetector(assets_dir / FACEXZOO_REL)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def inside(box: np.ndarray, region: np.ndarray) -> bool:
    return bool((box[:2] >= region[:2]).all() and (box[2:] <= region[2:]).all())


def reference_postprocess(model: RetinaFace, image_rgb: np.ndarray, conf: float, nms: float) -> np.ndarray:
    """FaceX-Zoo's single-image pipeline, written plainly: numpy preprocessing, list-built priors,
    per-box decode, greedy NMS with the +1 pixel convention. Brute force reference for the detector."""
    h, w = image_rgb.shape[:2]
    img = image_rgb[:, :, ::-1].astype(np.float32) - np.float32([104, 117, 123])
    with torch.no_grad():
        out = model(torch.from_numpy(img.transpose(2, 0, 1).copy())[None])
    anchors = []
    for k, step in enumerate(STEPS):
        for i, j in itertools.product(range(-(-h // step)), range(-(-w // step))):
            for s in MIN_SIZES[k]:
                anchors += [(j + 0.5) * step / w, (i + 0.5) * step / h, s / w, s / h]
    priors = torch.tensor(anchors, dtype=torch.float32).view(-1, 4)
    loc = out.loc[0]
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:], priors[:, 2:] * torch.exp(loc[:, 2:] * 0.2)), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    boxes = (boxes * torch.tensor([w, h, w, h], dtype=torch.float32)).numpy()
    scores = out.logits[0].softmax(-1)[:, 1].numpy()
    sel = scores > conf
    boxes, scores = boxes[sel], scores[sel]
    order = scores.argsort()[::-1]
    boxes, scores = boxes[order], scores[order]
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep, todo = [], np.arange(len(scores))
    while todo.size:
        i, rest = todo[0], todo[1:]
        keep.append(i)
        ww = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        hh = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        inter = ww * hh
        todo = rest[inter / (areas[i] + areas[rest] - inter) <= nms]
    return np.hstack([boxes[keep], scores[keep, None]]).astype(np.float32)


# ------------------------------------------------------------------- network, anchors (no assets needed)

def test_state_dict_keys_are_facexzoo_mobilenet025():
    sd = RetinaFace().state_dict()
    assert len(sd) == 300
    assert sd["body.stage1.0.0.weight"].shape == (8, 3, 3, 3)
    assert sd["ClassHead.2.conv1x1.weight"].shape == (4, 64, 1, 1)
    assert sd["BboxHead.0.conv1x1.weight"].shape == (8, 64, 1, 1)
    assert sd["LandmarkHead.1.conv1x1.weight"].shape == (20, 64, 1, 1)
    for key in ("fpn.merge2.0.weight", "ssh3.conv7x7_3.1.running_var", "ssh1.conv5X5_1.1.num_batches_tracked",
                "body.stage3.1.4.weight"):
        assert key in sd
    learnable = sum(p.numel() for p in RetinaFace().parameters())
    assert learnable == 426_608


def test_check_state_dict_names_missing_unexpected_and_shapes():
    sd = RetinaFace().state_dict()
    sd.pop("fpn.merge1.0.weight")
    sd["module.extra"] = torch.zeros(1)
    sd["ClassHead.0.conv1x1.bias"] = torch.zeros(6)
    with pytest.raises(ValueError) as err:
        check_state_dict(sd)
    msg = str(err.value)
    assert "fpn.merge1.0.weight" in msg and "module.extra" in msg and "ClassHead.0.conv1x1.bias" in msg


def test_prior_boxes_match_list_construction():
    h, w = 100, 130
    ref = []
    for k, step in enumerate(STEPS):
        for i, j in itertools.product(range(-(-h // step)), range(-(-w // step))):
            for s in MIN_SIZES[k]:
                ref += [(j + 0.5) * step / w, (i + 0.5) * step / h, s / w, s / h]
    ref = torch.tensor(ref, dtype=torch.float32).view(-1, 4)
    assert torch.equal(prior_boxes(h, w), ref)
    # the anchors must line up with the heads' outputs
    out = RetinaFace().eval()(torch.zeros(1, 3, h, w))
    assert out.loc.shape == (1, ref.shape[0], 4) and out.logits.shape == (1, ref.shape[0], 2)


def test_decode_boxes_by_hand():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    loc = torch.tensor([[[1.0, -2.0, 0.0, 5.0]]])
    # centre = (0.5 + 1*0.1*0.2, 0.5 - 2*0.1*0.4) = (0.52, 0.42); size = (0.2, 0.4 * e^1)
    size_h = 0.4 * np.e
    expected = torch.tensor([[[0.42, 0.42 - size_h / 2, 0.62, 0.42 + size_h / 2]]])
    torch.testing.assert_close(decode_boxes(loc, priors), expected)


def test_random_detector_is_well_formed_and_matches_reference():
    model = RetinaFace()
    for m in model.modules():  # spread the BN statistics so that scores vary across anchors
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0, 0.1)
    model.eval()
    det = RetinaFaceDetector(model.state_dict(), conf_threshold=0.3, nms_threshold=0.2, batch_size=2)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 96, 128, 3), dtype=np.uint8)
    out = det.detect(frames)
    assert isinstance(det, FaceDetector) and len(out) == 3
    for frame, dets in zip(frames, out):
        assert dets.ndim == 2 and dets.shape[1] == 5 and dets.dtype == np.float32
        assert np.all(np.diff(dets[:, 4]) <= 0) and np.all(dets[:, 4] > 0.3)
        ref = reference_postprocess(model, frame, 0.3, 0.2)
        assert dets.shape == ref.shape
        np.testing.assert_allclose(dets, ref, atol=1e-3, rtol=1e-5)
    assert any(len(d) > 1 for d in out), "the reference comparison should exercise NMS"


def test_batches_respect_frame_and_pixel_caps():
    det = RetinaFaceDetector(RetinaFace().state_dict(), batch_size=3, max_batch_pixels=2 * 64 * 64)
    sizes = []
    det.model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    frames = np.zeros((5, 64, 64, 3), dtype=np.uint8)
    assert len(det.detect(frames)) == 5 and sizes == [2, 2, 1]
    det.max_batch_pixels, sizes[:] = None, []
    det.detect(frames)
    assert sizes == [3, 2]
    det.max_batch_pixels, sizes[:] = 10, []                          # smaller than one frame: one at a time
    det.detect(frames)
    assert sizes == [1] * 5
    assert RetinaFaceDetector(RetinaFace().state_dict()).max_batch_pixels == 1 << 20   # CPU default


def test_preprocess_is_float32_bgr_minus_mean():
    det = RetinaFaceDetector(RetinaFace().state_dict())
    frame = np.zeros((1, 2, 3, 3), dtype=np.uint8)
    frame[0, 1, 2] = (10, 200, 255)                     # R, G, B
    x = det.preprocess(frame)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 2, 3)
    assert x[0, :, 1, 2].tolist() == [255 - 104, 200 - 117, 10 - 123]
    assert x[0, :, 0, 0].tolist() == [-104, -117, -123]


def test_detector_rejects_bad_frames():
    det = RetinaFaceDetector(RetinaFace().state_dict())
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((1, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        det.detect(np.zeros((32, 32, 3), dtype=np.uint8))


def test_legacy_state_dict_pickle_loads(tmp_path):
    sd = RetinaFace().state_dict()
    path = tmp_path / "legacy.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    loaded = load_facexzoo_state_dict(path)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)


class _Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("with_header", [False, True])
@pytest.mark.parametrize("func", ["system", "eval"])
def test_restricted_unpickler_refuses_code(tmp_path, with_header, func):
    marker = tmp_path / "pwned"
    payload = _Exploit(os.system, f"touch {marker}") if func == "system" else \
        _Exploit(eval, f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        if with_header:  # a valid legacy torch.save header, then the malicious object as the payload
            from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

            for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION,
                                                         "little_endian": True, "type_sizes": {}}):
                pickle.dump(obj, f, protocol=2)
        pickle.dump(payload, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=func):
        load_facexzoo_state_dict(path)
    with pytest.raises(pickle.UnpicklingError):
        load_retinaface_weights(path)
    assert not marker.exists()


def test_build_detector_errors():
    with pytest.raises(ValueError, match="FaceX-Zoo"):
        build_detector("retinaface")
    with pytest.raises(ValueError, match="unknown face detector"):
        build_detector("mtcnn")
    assert isinstance(build_detector("retinaface", weights=RetinaFace().state_dict()), RetinaFaceDetector)


# ------------------------------------------------------------------ FaceX-Zoo weights on a real photo

def test_loads_directory_and_pkl_identically(assets_dir):
    from_dir = load_facexzoo_state_dict(assets_dir / FACEXZOO_REL)
    from_pkl = load_facexzoo_state_dict(assets_dir / PKL_REL)
    assert len(from_dir) == 300 and from_dir.keys() == from_pkl.keys()
    assert all(torch.equal(from_dir[k], from_pkl[k]) for k in from_dir)
    RetinaFace().load_state_dict(from_dir, strict=True)
    assert from_dir["body.stage1.1.1.num_batches_tracked"].dtype == torch.int64


def test_retinaface_finds_astronaut_224(facexzoo_detector, astronaut_224):
    dets = facexzoo_detector.detect(astronaut_224[None])[0]
    assert dets.shape == (1, 5)
    np.testing.assert_allclose(dets[0, :4], BOX_224, atol=2.0)
    assert abs(dets[0, 4] - 0.993) < 0.005
    assert inside(dets[0, :4], FACE_REGION_224)
    np.testing.assert_array_equal(np.trunc(dets[0, :4]), BOX_224)   # the official crop truncates


def test_retinaface_finds_astronaut_720p(facexzoo_detector, astronaut_720p):
    dets = facexzoo_detector.detect(astronaut_720p[None])[0]
    assert len(dets) >= 1
    np.testing.assert_allclose(dets[0, :4], BOX_720P, atol=3.0)
    assert dets[0, 4] > 0.99
    assert inside(dets[0, :4], FACE_REGION_720P)
    np.testing.assert_allclose(dets, reference_postprocess(facexzoo_detector.model, astronaut_720p, 0.7, 0.2),
                               atol=1e-3, rtol=1e-5)


def test_retinaface_batching_matches_single(facexzoo_detector, astronaut_224):
    frames = np.stack([astronaut_224, astronaut_224[:, ::-1], np.full_like(astronaut_224, 128)])
    singles = [facexzoo_detector.detect(f[None])[0] for f in frames]
    default = facexzoo_detector.batch_size
    try:
        for batch_size in (2, 3):           # an uneven last chunk, then all frames in one forward
            facexzoo_detector.batch_size = batch_size
            batched = facexzoo_detector.detect(frames)
            for a, b in zip(batched, singles):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, atol=1e-3)
    finally:
        facexzoo_detector.batch_size = default
    assert len(singles[2]) == 0                                      # grey frame: no face
    mirrored = singles[1][0, :4]                                     # a flipped face stays a face
    np.testing.assert_allclose([224 - mirrored[2], mirrored[1], 224 - mirrored[0], mirrored[3]], BOX_224, atol=4)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_conversion_round_trip(assets_dir, tmp_path, astronaut_224, suffix):
    dst = convert_facexzoo(assets_dir / FACEXZOO_REL, tmp_path / f"retinaface{suffix}")
    original = load_facexzoo_state_dict(assets_dir / PKL_REL)
    if suffix == ".pt":
        plain = torch.load(dst, map_location="cpu", weights_only=True)
    else:
        from safetensors.torch import load_file

        plain = load_file(str(dst))
    assert plain.keys() == original.keys() and all(torch.equal(plain[k], original[k]) for k in plain)
    a = RetinaFaceDetector(dst).detect(astronaut_224[None])[0]
    b = RetinaFaceDetector(assets_dir / PKL_REL).detect(astronaut_224[None])[0]
    np.testing.assert_array_equal(a, b)


def test_haar_finds_astronaut(astronaut_224):
    det = build_detector("haar")
    dets = det.detect(astronaut_224[None])[0]
    assert dets.shape[1] == 5 and len(dets) >= 1
    assert np.all(np.diff(dets[:, 4]) <= 0)
    assert iou(dets[0, :4], BOX_224) > 0.5
    np.testing.assert_allclose(dets[0, :4], HAAR_224, atol=3)
    assert det.detect(np.full((1, 64, 64, 3), 128, np.uint8))[0].shape == (0, 5)


# ------------------------------------------------------------------------- cropping with a fake detector

class FakeDetector:
    """Returns fixed detections per frame (None = no face), highest score first."""

    def __init__(self, boxes: list[list[list[float]] | None]):
        self.boxes = boxes
        self.calls = 0

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        self.calls += 1
        assert len(frames) == len(self.boxes)
        return [np.zeros((0, 5), np.float32) if b is None else np.asarray(b, np.float32) for b in self.boxes]


def official_expand(box, height, width, scale):
    """The official crop-box arithmetic, one box at a time."""
    x_min, y_min, x_max, y_max = map(int, box)
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    new_w, new_h = (x_max - x_min) * scale, (y_max - y_min) * scale
    return [max(int(cx - new_w / 2), 0), max(int(cy - new_h / 2), 0),
            min(int(cx + new_w / 2), width), min(int(cy + new_h / 2), height)]


def test_expand_boxes_by_hand():
    boxes = np.array([
        [10.7, 20.2, 50.9, 60.8],   # trunc -> [10,20,50,60], centre (30,40), 40x40 -> half 26
        [0, 0, 20, 10],             # margin 1.3: half (13, 6.5) about (10,5) -> clamped at 0
        [180, 90, 200, 100],        # half (13, 6.5) about (190,95) -> clamped at W=200, H=100
    ])
    out = expand_boxes(boxes, height=100, width=200, margin=1.3)
    np.testing.assert_array_equal(out, [[4, 14, 56, 66], [0, 0, 23, 11], [177, 88, 200, 100]])
    sq = expand_boxes(np.array([[10, 20, 30, 60]]), 100, 200, margin=1.0, square=True)
    np.testing.assert_array_equal(sq, [[0, 20, 40, 60]])            # 20x40 -> 40x40 about (20, 40)
    sq = expand_boxes(np.array([[10, 20, 30, 60]]), 100, 200, margin=1.5, square=True)
    np.testing.assert_array_equal(sq, [[0, 10, 50, 70]])            # half 30: x from -10 (clamped) to 50


def test_expand_boxes_matches_official_rule():
    rng = np.random.default_rng(1)
    xy = rng.uniform(-20, 300, size=(500, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 150, size=(500, 2))], axis=1)
    for margin in (1.0, 1.3):
        ours = expand_boxes(boxes, height=240, width=320, margin=margin)
        ref = np.array([official_expand(b, 240, 320, margin) for b in boxes])
        valid = (ref[:, 2] > ref[:, 0]) & (ref[:, 3] > ref[:, 1])   # boxes that hit the image
        np.testing.assert_array_equal(ours[valid], ref[valid])
        assert (ours[:, 2] > ours[:, 0]).all() and (ours[:, 3] > ours[:, 1]).all()


def coordinate_frames(n: int, height: int = 60, width: int = 80) -> np.ndarray:
    """Frames whose pixels encode (frame, row, column), so a crop shows where it came from."""
    f, y, x = np.meshgrid(np.arange(n), np.arange(height), np.arange(width), indexing="ij")
    return np.stack([f * 40, y, x], axis=-1).astype(np.uint8)


def test_crop_content_and_boxes():
    frames = coordinate_frames(2)
    # box 10x10 at (20, 30); margin 0.8 -> 8x8 about (25, 35) -> [21, 31, 29, 39]; size 8 => no resampling
    fake = FakeDetector([[[20, 30, 30, 40, 0.9], [0, 0, 5, 5, 0.5]], [[20, 30, 30, 40, 0.99]]])
    res = FaceCropper(fake, size=8, margin=0.8).crop(frames, np.array([0.0, 0.2]), "v.mp4")
    assert isinstance(res, CropResult) and res.crops.shape == (2, 8, 8, 3) and res.crops.dtype == np.uint8
    np.testing.assert_array_equal(res.boxes, [[21, 31, 29, 39]] * 2)
    np.testing.assert_array_equal(res.crops[1], frames[1, 31:39, 21:29])
    assert res.is_detected.tolist() == [True, True] and res.n_filled == 0 and fake.calls == 1
    # resizing is bilinear without keeping the aspect ratio
    res = FaceCropper(fake, size=16, margin=1.0).crop(frames, np.array([0.0, 0.2]), "v.mp4")
    assert res.crops.shape == (2, 16, 16, 3)
    assert res.crops[0, :, :, 2].min() >= 20 and res.crops[0, :, :, 2].max() <= 30


def test_gap_filling_picks_nearest_detected_frame():
    times = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    box_a, box_b = [10, 10, 30, 30, 0.9], [40, 20, 60, 40, 0.8]
    fake = FakeDetector([[box_a], None, None, None, [box_b], None])
    res = FaceCropper(fake, size=8, margin=1.0, max_gap_s=0.5).crop(coordinate_frames(6), times, "v.mp4")
    # frame 2 is 0.5 s from both detections: the tie goes to the earlier frame
    assert res.source_index.tolist() == [0, 0, 0, 4, 4, 4]
    assert res.is_detected.tolist() == [True, False, False, False, True, False] and res.n_filled == 4
    np.testing.assert_array_equal(res.boxes[:3], [box_a[:4]] * 3)
    np.testing.assert_array_equal(res.boxes[3:], [box_b[:4]] * 3)
    # the filled crop is cut from its own frame with the borrowed box
    assert (res.crops[5, :, :, 0] == 5 * 40).all()

    # same clip in shuffled order: the mapping follows the times, not the positions
    perm = np.array([3, 0, 5, 2, 4, 1])
    fake_perm = FakeDetector([fake.boxes[i] for i in perm])
    res_p = FaceCropper(fake_perm, size=8, margin=1.0, max_gap_s=0.5).crop(coordinate_frames(6)[perm], times[perm], "v")
    np.testing.assert_array_equal(perm[res_p.source_index], res.source_index[perm])


def test_gap_beyond_tolerance_fails():
    times = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    fake = FakeDetector([[[10, 10, 30, 30, 0.9]], None, None, None, [[40, 20, 60, 40, 0.8]], None])
    with pytest.raises(MediaError) as err:
        FaceCropper(fake, size=8, max_gap_s=0.4).crop(coordinate_frames(6), times, "clip.mp4")
    assert err.value.reason == "no_face" and err.value.path == "clip.mp4" and "frame 2" in err.value.detail
    with pytest.raises(MediaError):  # official behaviour: any missed frame drops the clip
        FaceCropper(fake, size=8, max_gap_s=0.0).crop(coordinate_frames(6), times, "clip.mp4")
    res = FaceCropper(fake, size=8, max_gap_s=None).crop(coordinate_frames(6), times * 100, "clip.mp4")
    assert res.n_filled == 4


def test_no_face_at_all_raises_media_error():
    fake = FakeDetector([None, None, None])
    with pytest.raises(MediaError) as err:
        FaceCropper(fake).crop(coordinate_frames(3), np.array([0.0, 0.2, 0.4]), "videos/empty.mp4")
    assert err.value.reason == "no_face" and err.value.path == "videos/empty.mp4"
    assert "videos/empty.mp4" in str(err.value)


def test_cropper_validates_inputs():
    fake = FakeDetector([None])
    with pytest.raises(ValueError, match="times"):
        FaceCropper(fake).crop(coordinate_frames(1), np.array([0.0, 1.0]), "v")
    with pytest.raises(MediaError) as err:
        FaceCropper(FakeDetector([])).crop(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0), "v")
    assert err.value.reason == "no_frames"


def test_cropper_on_real_photo(facexzoo_detector, astronaut_720p):
    res = FaceCropper(facexzoo_detector, size=224, margin=1.3).crop(astronaut_720p[None], np.array([0.0]), "astro")
    x1, y1, x2, y2 = res.boxes[0]
    assert res.crops.shape == (1, 224, 224, 3) and res.is_detected.all()
    np.testing.assert_allclose([x2 - x1, y2 - y1], [(661 - 530) * 1.3, (251 - 83) * 1.3], atol=3)
    assert inside(BOX_720P, res.boxes[0])


# ---------------------------------------------------------------------------------------------- streaming track


class SquareDetector:
    """Finds the bright square drawn by `square_frames` (none in dark frames); counts frames seen."""

    def __init__(self) -> None:
        self.n_frames = 0

    def detect(self, frames):
        self.n_frames += len(frames)
        out = []
        for f in frames:
            ys, xs = np.nonzero(f[..., 0] > 200)
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1.0]] if ys.size else np.zeros((0, 5))
            out.append(np.asarray(box, dtype=np.float32).reshape(-1, 5))
        return out


def square_frames(n: int, missing: set[int]) -> np.ndarray:
    """(n, 64, 80, 3): a square moving right by 2 px per frame; absent in `missing` frames."""
    frames = np.zeros((n, 64, 80, 3), dtype=np.uint8)
    frames[..., 1] = (np.arange(80) * 3)[None, None, :]          # texture, so crops differ by position
    for j in range(n):
        if j not in missing:
            frames[j, 20:44, 10 + 2 * j:34 + 2 * j, 0] = 255
    return frames


def run_track(frames, times, cropper, detect_batch, keep=()):
    track = FaceTrack(cropper, times, "frames", detect_batch, keep=keep)
    for j, f in enumerate(frames):
        track.push(j, f)
    track.finish()
    return track


@pytest.mark.parametrize("detect_batch", [1, 3, 16])
def test_face_track_equals_face_cropper_and_detects_once(detect_batch):
    # Frame 4 ties between 3 and 5 (earlier wins); 10 takes 9, 11 takes 12; 0 takes 1.
    missing = {0, 4, 10, 11}
    frames, times = square_frames(16, missing), 0.4 * np.arange(16)
    reference = FaceCropper(SquareDetector(), size=16, margin=1.3, max_gap_s=1.0).crop(frames, times, "frames")
    det = SquareDetector()
    track = run_track(frames, times, FaceCropper(det, size=16, margin=1.3, max_gap_s=1.0), detect_batch)
    assert det.n_frames == 16                                   # every frame detected exactly once
    assert track.n_filled == reference.n_filled == len(missing)
    for j in range(16):
        np.testing.assert_array_equal(track.crops[j], reference.crops[j])
    assert reference.source_index[4] == 3 and reference.source_index[11] == 12


def test_face_track_gap_too_long_gives_no_crop_and_bounded_waiting():
    missing = set(range(5, 25))                                  # 8 s without a face at 0.4 s spacing
    frames, times = square_frames(30, missing), 0.4 * np.arange(30)
    track = FaceTrack(FaceCropper(SquareDetector(), size=16, max_gap_s=1.0), times, "frames", 2)
    peak_waiting = 0
    for j, f in enumerate(frames):
        track.push(j, f)
        peak_waiting = max(peak_waiting, len(track.waiting))
    track.finish()
    none = {j for j, c in track.crops.items() if c is None}
    assert none == {j for j in missing if min(abs(j - 4), abs(j - 25)) * 0.4 > 1.0 + 1e-9}
    assert track.n_filled == len(missing) - len(none)
    # a frame waits at most max_gap_s (2.5 frames here) plus one detection batch
    assert peak_waiting <= math.ceil(1.0 / 0.4) + 2 + 1


def test_face_track_without_any_face_is_no_face():
    frames = square_frames(5, set(range(5)))
    track = FaceTrack(FaceCropper(SquareDetector(), size=16), 0.4 * np.arange(5), "v.mp4", 2)
    for j, f in enumerate(frames):
        track.push(j, f)
    with pytest.raises(MediaError) as err:
        track.finish()
    assert err.value.reason == "no_face"
