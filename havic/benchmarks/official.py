"""The official pipeline's costs, re-implemented as the same-run baseline of the benchmark suite.

The official evaluation script scores a video through files: frames decoded on the 1/fps grid and
written as PNG files, the face detector run on each frame file alone at full resolution (crop
margin 1.0), each face written as PNG and read back, the audio track written to and read from a
wav file, one fbank per window, all windows in one fp32 batch
(docs/official-differences.md#sliding-window-inference). Its training data are PNG face crops and a
wav file per clip. Running these steps with our model and our decoder on the same machine in the
same run gives a baseline whose ratio to our pipeline does not depend on the machine.

Heavy imports (OpenCV, PIL, the data modules) happen inside the functions: a case measures its
resident set above what the process held after ``import torch``.
"""
from __future__ import annotations

import shutil
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "official_inputs",
    "official_layout",
    "official_pipeline_score",
    "read_official_layout",
    "wav_roundtrip",
]


def wav_roundtrip(samples: np.ndarray, path: Path, sr: int) -> np.ndarray:
    """Write 16-bit PCM wav and read it back, as the official pipeline extracts the track to a file.

    The samples are rounded as ffmpeg rounds them (:func:`havic.inference.official_mode.pcm16`), so
    the result equals :func:`havic.inference.official_mode.wav16` of `samples`.
    """
    from havic.inference.official_mode import pcm16

    pcm = pcm16(samples).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    with wave.open(str(path), "rb") as r:
        data = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0


def official_inputs(file: Path, cfg: Any, detector: Any, workdir: Path, max_seconds: float, stride: int,
                    stats: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """The model inputs of one video's windows, built the way the official evaluation script does.

    Where a frame has no face the official script skips the whole video; here the previous box is
    used instead (the first box found for frames before it), so that the cost of a whole video is
    measured, and the misses are counted in ``stats["frames_without_face"]``.

    Args:
        file: the video.
        cfg: the configuration (``data.fps``, ``data.audio``, ``model.*`` input sizes).
        detector: a face detector (:func:`havic.data.face.build_detector`).
        workdir: scratch folder for the frame, face and wav files (emptied first).
        max_seconds: the seconds scored.
        stride: frames between window starts.
        stats: receives ``frames_without_face``.

    Returns:
        (video (W, 3, F, S, S) in [0, 1], audio (W, T, M)) of the W windows starting every `stride`
        frames, or None with fewer faces than one window's frames.
    """
    import cv2
    from PIL import Image

    from havic.data.audio import AudioFeatures
    from havic.data.face import expand_boxes
    from havic.data.video import iter_frames_at, probe, read_audio
    from havic.inference.official_mode import official_audio_spans, official_frame_indices

    fps, n_frames = float(cfg.data.fps), int(cfg.model.video.num_frames)
    size = int(cfg.model.video.image_size)
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "frames").mkdir(parents=True)
    (workdir / "faces").mkdir()
    info = probe(file)
    ids, n_timepoints = official_frame_indices(info.n_frames or max(1, round(info.duration * info.fps)), info.fps,
                                               1 / fps)
    grid = ids / info.fps
    n_png = min(grid.size, round(max_seconds * fps) + 2)  # the official script writes a few frames beyond 10 s
    for j, (_, frame) in enumerate(iter_frames_at(file, grid[:n_png], size=(info.width, info.height))):
        cv2.imwrite(str(workdir / "frames" / f"{j:05d}.png"), frame[:, :, ::-1])
    files = sorted((workdir / "frames").glob("*.png"))[: round(max_seconds * fps)]
    box, misses, waiting = None, 0, []
    for j, f in enumerate(files):
        rgb = cv2.imread(str(f))[:, :, ::-1]
        dets = detector.detect(np.ascontiguousarray(rgb)[None])[0]
        if len(dets):
            box = dets[:1, :4]
        else:
            misses += 1
        if box is None:
            waiting.append((j, rgb))     # no face yet: these frames take the first box found
            continue
        for k, image in [*waiting, (j, rgb)]:
            x1, y1, x2, y2 = expand_boxes(box, image.shape[0], image.shape[1], margin=1.0)[0]
            cv2.imwrite(str(workdir / "faces" / f"face_{k:02d}.png"), image[y1:y2, x1:x2, ::-1])
        waiting = []
    # The official script drops a video with any face miss; the cost baseline keeps the nearest box.
    stats["frames_without_face"] = misses
    faces = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR))
             for f in sorted((workdir / "faces").glob("*.png"))]
    n = len(faces)
    if n < n_frames:
        return None
    n -= (n - n_frames) % stride
    clip = torch.from_numpy(np.stack(faces[:n])).permute(3, 0, 1, 2).float().div(255.0)  # (3, n, S, S)
    starts = list(range(0, n - n_frames + 1, stride))
    video = torch.stack([clip[:, s:s + n_frames] for s in starts])
    features = AudioFeatures.from_config(cfg)
    sr = features.sample_rate
    # The whole track as ffmpeg writes it (untrimmed), cut in proportion to the frames kept.
    wav = wav_roundtrip(read_audio(file, sr, trim=False), workdir / "audio.wav", sr)
    spans = official_audio_spans(n, n_timepoints, wav.size, n_frames, stride)
    return video, torch.stack([features(wav[a:b]) for a, b in spans])


def official_pipeline_score(file: Path, model: nn.Module, cfg: Any, detector: Any, workdir: Path,
                            max_seconds: float, stride: int, stats: dict[str, Any]) -> float | None:
    """Score one video the way the official evaluation script does, with our model.

    See docs/official-differences.md#sliding-window-inference.

    The inputs are :func:`official_inputs` (its arguments and ``stats`` are the same); all windows
    run in one fp32 batch and the score is the sigmoid of the mean window logit.

    Returns:
        sigmoid(mean window logit), or None with fewer frames than one window; ``stats`` also
        receives ``n_windows``.
    """
    inputs = official_inputs(file, cfg, detector, workdir, max_seconds, stride, stats)
    if inputs is None:
        return None
    video, audio = inputs
    with torch.inference_mode():
        logits = model(video, audio).logit
    stats["n_windows"] = video.shape[0]
    return float(torch.sigmoid(logits.float().mean()))


def official_layout(records: Sequence[Any], cache: Any, out: Path) -> list[tuple[list[Path], Path]]:
    """The official training layout of cached clips: one PNG per face crop and a wav path per clip.

    Args:
        records: the clips (:class:`havic.data.cache.ClipRecord`).
        cache: their :class:`havic.data.cache.ClipCache`.
        out: the folder written into, one subfolder per clip.

    Returns:
        Per clip, (its PNG files in frame order, the path its wav file goes to; not written here).
    """
    import cv2

    layout = []
    for r in records:
        data = cache.load_clip(r)
        folder = out / f"{r.key}_{r.clip}"
        folder.mkdir(parents=True, exist_ok=True)
        pngs = []
        for i, crop in enumerate(data.frames):
            pngs.append(folder / f"face_{i:02d}.png")
            cv2.imwrite(str(pngs[-1]), crop[:, :, ::-1])
        layout.append((pngs, folder / "clip.wav"))
    return layout


def read_official_layout(layout: Sequence[tuple[Sequence[Path], Path]], size: int, features: Any) -> None:
    """Read every clip of an official layout once as its training loader does (the results are dropped).

    Each face PNG is decoded and resized to `size`, the clip becomes a (3, F, S, S) float tensor,
    and the wav file is read and turned into model features (``features``, an
    :class:`havic.data.audio.AudioFeatures`) on every read.
    """
    from PIL import Image

    for pngs, wav in layout:
        frames = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in pngs]
        torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float().div(255.0)
        with wave.open(str(wav), "rb") as w:
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        features(x - x.mean())
