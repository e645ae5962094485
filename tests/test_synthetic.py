"""The synthetic talking-face generator: determinism, labels, coherence of reals, no trivial artefacts."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from havic.demo.faces import make_identities, mouth_track, portrait
from havic.demo.speech import audio_envelope, plan_utterance, synthesize_speech
from havic.demo.world import (
    CATEGORIES, CATEGORY_LABELS, ClipSpec, SyntheticConfig, plan_clips, render_clip, write_clips,
)

CONFIG = SyntheticConfig(duration_s=3.2, n_identities=4, seed=0)
COHERENT = ("RVRA", "FVRA-swap", "FVRA-lipsync")    # lips driven by the audio heard
DESYNCED = ("RVFA", "FVFA")                         # lips driven by another utterance


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Mann-Whitney AUC of `pos` above `neg` (ties count half), brute force."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _mouth_darkness(frames: np.ndarray, mouth_xy: np.ndarray, half: int = 4) -> np.ndarray:
    """Negative mean grey level of a small box just below each frame's mouth centre: (N,)."""
    grey = frames.astype(np.float64).mean(axis=-1)
    out = []
    for g, (x, y) in zip(grey, mouth_xy):
        xi, yi = int(round(x)), int(round(y))
        out.append(-g[yi:yi + 2 * half, xi - half:xi + half].mean())
    return np.asarray(out)


@pytest.fixture(scope="module")
def identities():
    return make_identities(CONFIG.n_identities, CONFIG.seed)


@pytest.fixture(scope="module")
def rendered(identities):
    """Six clips per category, rendered in memory."""
    specs = plan_clips({c: 6 for c in CATEGORIES}, CONFIG)
    return {s.name: render_clip(s, CONFIG, identities) for s in specs}


def test_brute_force_auc_helper():
    assert _auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert _auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert _auc(np.array([0.0, 2.0]), np.array([1.0])) == 0.5


def test_identities_are_deterministic_distinct_faces_and_voices(identities):
    assert make_identities(4, 0) == identities
    assert make_identities(4, 1) != identities
    faces = [portrait(i) for i in identities]
    for a in range(len(faces)):
        assert faces[a].shape == (224, 224, 3) and faces[a].dtype == np.float32
        for b in range(a):
            assert np.abs(faces[a] - faces[b]).mean() > 0.03, (a, b)
    pitches = sorted(i.voice.f0_hz for i in identities)
    assert pitches[0] == pytest.approx(95.0) and pitches[-1] == pytest.approx(240.0)
    assert min(np.diff(np.log(pitches))) > 0.2           # any two voices differ by > 20 % in pitch
    # The mouth landmark lands on the mouth of every portrait: the rig opens it there.
    for ident in identities:
        eyes_and_mouth = ident.landmarks()
        assert eyes_and_mouth[0, 0] < eyes_and_mouth[1, 0]
        assert eyes_and_mouth[2, 1] > eyes_and_mouth[:2, 1].max()


def test_plan_clips_labels_and_roles():
    specs = plan_clips({c: 8 for c in CATEGORIES}, CONFIG)
    assert len({s.name for s in specs}) == len(specs) == 40
    assert plan_clips({c: 8 for c in CATEGORIES}, CONFIG) == specs
    for s in specs:
        assert s.modality_labels == CATEGORY_LABELS[s.category]
        assert s.label == int(s.category != "RVRA")
        assert (s.voice != s.face) == (s.category in ("RVFA", "FVRA-lipsync", "FVFA"))
        assert (s.swap is not None) == (s.category in ("FVRA-swap", "FVFA"))
        assert s.swap is None or s.swap != s.face
        assert s.lips_follow_audio == (s.category in COHERENT)
        assert s.soft_mouth == (s.category == "FVRA-lipsync")
    for c in CATEGORIES:  # every category shows every face equally often
        faces = [s.face for s in specs if s.category == c]
        assert sorted(np.bincount(faces, minlength=4).tolist()) == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="unknown categories"):
        plan_clips({"XYZ": 1}, CONFIG)


def test_render_is_deterministic_and_shaped(identities):
    spec = plan_clips({"FVFA": 1}, CONFIG)[0]
    a, b = render_clip(spec, CONFIG, identities), render_clip(spec, CONFIG, identities)
    assert a.frames.shape == (32, 96, 96, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (51200,) and a.audio.dtype == np.float32
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    other = render_clip(ClipSpec(**{**spec.__dict__, "seed": spec.seed + 1}), CONFIG, identities)
    assert np.abs(other.audio - a.audio).max() > 0.01


def test_speech_never_silent_and_loud_in_syllables():
    rng = np.random.default_rng(0)
    voice = make_identities(3, 0)[0].voice
    utt = plan_utterance(voice, 3.2, rng)
    wave = synthesize_speech(utt, 3.2, 16000)
    assert wave.shape == (51200,) and np.abs(wave).max() <= 1.0
    rms = np.sqrt((wave.astype(np.float64).reshape(-1, 160) ** 2).mean(axis=1))      # 10 ms windows
    assert rms.min() > 0.3 * utt.noise_level                                           # noise floor everywhere
    t = (np.arange(rms.size) + 0.5) * 0.01
    voiced = np.zeros(rms.size, dtype=bool)
    for s in utt.syllables:
        voiced |= (t > s.vowel_start_s + 0.2 * s.vowel_s) & (t < s.vowel_start_s + 0.8 * s.vowel_s)
    silent = np.ones(rms.size, dtype=bool)
    for s in utt.syllables:
        silent &= (t < s.start_s - 0.03) | (t > s.vowel_start_s + s.vowel_s + 0.03)
    assert voiced.any() and silent.any()
    assert np.median(rms[voiced]) > 10 * np.median(rms[silent])
    # about 1.5 syllables per second (0.7 s per syllable and pause on average)
    assert 0.6 <= len(utt.syllables) / 3.2 <= 3.0
    rates = [len(plan_utterance(voice, 64.0, np.random.default_rng(k)).syllables) / 64.0 for k in range(3)]
    assert 1.2 <= np.mean(rates) <= 1.8


def test_mouth_track_peaks_with_the_vowels():
    utt = plan_utterance(make_identities(3, 0)[1].voice, 3.2, np.random.default_rng(1))
    opening, width = mouth_track(utt, 32, 10.0)
    assert opening.shape == width.shape == (32,)
    assert 0.0 <= opening.min() and opening.max() <= 1.0 and opening.max() > 0.3
    wave = synthesize_speech(utt, 3.2, 16000)
    assert _corr(opening, audio_envelope(wave, 32, 10.0, 16000)) > 0.7


def test_lips_follow_the_audio_in_reals_and_not_in_desynced_fakes(rendered):
    corr = {c: [] for c in CATEGORIES}
    for clip in rendered.values():
        env = audio_envelope(clip.audio, CONFIG.n_frames, CONFIG.fps, CONFIG.sample_rate)
        corr[clip.spec.category].append(_corr(clip.opening, env))
    for c in COHERENT:
        assert min(corr[c]) > 0.6, (c, corr[c])
    for c in DESYNCED:  # two unrelated utterances: chance correlation only (both start with a pause)
        assert abs(float(np.mean(corr[c]))) < 0.4, (c, corr[c])
    assert abs(float(np.mean([corr[c] for c in DESYNCED]))) < 0.25


def test_the_pixels_show_the_mouth_opening(rendered):
    for clip in rendered.values():
        if clip.opening.max() > 0.3:
            # A pasted face is aligned on landmarks only, so its mouth may sit a pixel or two off.
            expected = 0.6 if clip.spec.swap is not None else 0.9
            assert _corr(_mouth_darkness(clip.frames, clip.mouth_xy), clip.opening) > expected, clip.spec.name


def test_fakes_differ_from_their_real_counterpart_only_where_manipulated(identities):
    """Same seed, same face: the swap changes the inner face, the lip sync the lower face; hair and background stay."""
    base = plan_clips({"RVRA": 1}, CONFIG)[0]
    real = render_clip(base, CONFIG, identities)
    swap = render_clip(ClipSpec(**{**base.__dict__, "category": "FVRA-swap", "swap": (base.face + 1) % 4}),
                       CONFIG, identities)
    np.testing.assert_array_equal(real.audio, swap.audio)
    diff = np.abs(real.frames.astype(int) - swap.frames.astype(int)).mean(axis=(0, 3))     # (H, W)
    x, y = real.mouth_xy.mean(axis=0).round().astype(int)
    assert diff[y - 25:y + 5, x - 12:x + 12].mean() > 5 * diff[:12].mean()                  # face vs top rows
    assert diff[:12].mean() < 2.0


@pytest.fixture(scope="module")
def written(tmp_path_factory, identities):
    """Eight real and eight fake files (two per fake category), written as mp4."""
    root = tmp_path_factory.mktemp("synthetic")
    specs = plan_clips({"RVRA": 8, **{c: 2 for c in CATEGORIES[1:]}}, CONFIG, prefix="t")
    paths = write_clips(root, specs, CONFIG, workers=1)
    return root, specs, paths


@pytest.mark.slow
def test_files_decode_with_the_written_content(written):
    from havic.data.video import probe, read_audio, read_frames

    root, specs, paths = written
    rows = (root / "labels.csv").read_text().splitlines()
    assert rows[0].startswith("path,label,audio_label,video_label,group,category")
    assert len(rows) == 1 + len(specs)
    spec, path = specs[0], paths[0]
    assert path == root / "videos" / "RVRA" / f"{spec.name}.mp4"
    info = probe(path)
    assert (info.width, info.height, info.fps, info.has_audio) == (96, 96, 10.0, True)
    clip = render_clip(spec, CONFIG)
    frames, _ = read_frames(path, np.arange(32) / 10.0)
    assert np.abs(frames.astype(int) - clip.frames.astype(int)).mean() < 6          # lossy H.264, crf 23
    wave = read_audio(path, 16000)
    assert abs(wave.size - clip.audio.size) <= 160
    n = min(wave.size, clip.audio.size)
    assert _corr(wave[:n], clip.audio[:n]) > 0.95                                  # AAC round trip
    # The decoded file is coherent: mouth darkness follows the decoded audio envelope.
    env = audio_envelope(wave, 32, 10.0, 16000)
    assert _corr(_mouth_darkness(frames, clip.mouth_xy), env) > 0.5


@pytest.mark.slow
def test_no_trivial_artefact_separates_real_from_fake(written):
    """Duration, file size, brightness, loudness and leading quiet: overlapping distributions."""
    from havic.data.video import probe, read_audio, read_frames

    root, specs, paths = written
    feats: dict[str, list[list[float]]] = {"duration": [[], []], "size": [[], []], "brightness": [[], []],
                                           "rms": [[], []], "lead": [[], []], "min_window_rms": [[], []]}
    for spec, path in zip(specs, paths):
        k = spec.label
        feats["duration"][k].append(probe(path).duration)
        feats["size"][k].append(path.stat().st_size)
        frames, _ = read_frames(path, np.arange(32) / 10.0)
        feats["brightness"][k].append(frames.mean())
        wave = read_audio(path, 16000).astype(np.float64)
        win = np.sqrt((wave[: wave.size // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))
        feats["rms"][k].append(math.sqrt((wave ** 2).mean()))
        feats["lead"][k].append(int(np.argmax(win > 0.2 * win.max())) * 0.01)       # time of the first sound
        feats["min_window_rms"][k].append(win[2:-2].min())                           # no digital silence
    assert len(set(feats["duration"][0] + feats["duration"][1])) == 1                # all exactly equal
    assert min(feats["min_window_rms"][0] + feats["min_window_rms"][1]) > 5e-4
    for name in ("size", "brightness", "rms", "lead"):
        real, fake = np.asarray(feats[name][0]), np.asarray(feats[name][1])
        assert fake.min() < real.max() and real.min() < fake.max(), name             # ranges overlap
        assert 0.2 <= _auc(real, fake) <= 0.8, (name, real, fake)


def test_write_clips_skips_existing_files_and_rejects_duplicates(tmp_path):
    specs = plan_clips({"RVRA": 1}, CONFIG, prefix="s")
    target = tmp_path / "videos" / "RVRA" / f"{specs[0].name}.mp4"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"kept")
    calls = []
    write_clips(tmp_path, specs, CONFIG, progress=lambda d, t: calls.append((d, t)))
    assert target.read_bytes() == b"kept" and calls == [(1, 1)]
    with pytest.raises(ValueError, match="unique"):
        write_clips(tmp_path, specs * 2, CONFIG)
    assert Path(tmp_path / "labels.csv").is_file()
