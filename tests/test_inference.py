"""Whole-video scoring: the scorer, its configured defaults, detector loading, inputs, the infer CLI.

A tiny detector is trained in the session (tests/tiny_detector.py); videos are synthetic talking faces
(the astronaut, Haar-detectable) plus megamind.avi from the shared assets.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from havic import inference as inf
from havic.checkpoints import CheckpointError, save_weights
from havic.config import CONFIG_DIR
from havic.data.audio import AudioFeatures, window_fbanks
from havic.data.face import FaceCropper, HaarDetector
from havic.data.manifest import ManifestRow, write_manifest
from havic.data.video import read_frames, write_video
from havic.models import build_model
from havic.report import picture_name
from havic.cli import infer as infer_cli
from havic.inference.journal import ResumeError, read_journal
from havic.utils.io import atomic_path

import tiny_detector as td


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    path, _ = td.tiny_checkpoint(str(tmp_path_factory.getbasetemp()))
    return path


@pytest.fixture(scope="session")
def tiny(tiny_weights):
    return inf.load_detector(tiny_weights)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    td.write_talking_video(root / "talk10.mp4", 10.0)
    td.write_talking_video(root / "mute.mp4", 4.0, audio=False)
    td.write_talking_video(root / "short.mp4", 2.0)
    td.write_talking_video(root / "leaves.mp4", 7.0, face_until=2.5)
    td.grey_video(root / "noface.mp4", 4.0)
    whole = (root / "talk10.mp4").read_bytes()
    (root / "corrupt.mp4").write_bytes(whole[: len(whole) // 3])
    (root / "notes.txt").write_text("not a video\n")
    return root


class CountingDetector:
    """Wraps a detector and counts the frames it sees."""

    def __init__(self, inner) -> None:
        self.inner, self.n_frames, self.n_calls = inner, 0, 0

    def detect(self, frames):
        self.n_frames += len(frames)
        self.n_calls += 1
        return self.inner.detect(frames)


def scorer_for(model, cfg, **kwargs) -> tuple[inf.VideoScorer, CountingDetector]:
    counting = CountingDetector(HaarDetector())
    cropper = FaceCropper(counting, size=cfg.model.video.image_size, margin=cfg.data.face.margin,
                          max_gap_s=cfg.data.face.max_gap_s)
    return inf.VideoScorer(model, cfg, cropper, **kwargs), counting


# ---------------------------------------------------------------------------------------------- scorer


def test_tiny_checkpoint_trained(tiny_weights):
    _, losses = td.tiny_checkpoint(str(tiny_weights.parent))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_scorer_detects_each_frame_once_and_equals_model_on_hand_built_windows(tiny, videos):
    model, cfg = tiny
    scorer, counting = scorer_for(model, cfg, batch_size=4)
    path = videos / "talk10.mp4"
    pred = scorer.score(path)
    assert pred.error is None and pred.n_windows == 18
    assert pred.window_starts == pytest.approx([0.4 * k for k in range(18)])
    # tiny config: 4 frames 0.8 s apart per window, windows every 0.4 s -> the 0.4 s grid 0 .. 9.2
    assert scorer.stats.n_frames == 24
    assert counting.n_frames == scorer.stats.n_detected_frames == 24

    # The same windows built by hand: all frames at once, the whole-clip cropper, the reference fbank.
    times = 0.4 * np.arange(24)
    frames, _ = read_frames(path, times, size=(td.VIDEO_SIZE, td.VIDEO_SIZE))
    crops = FaceCropper(HaarDetector(), size=32, margin=cfg.data.face.margin, max_gap_s=1.0).crop(
        frames, times, str(path)).crops
    from havic.data.video import read_audio

    wave = read_audio(path)
    for w in (0, 7, 17):
        ids = [w + 2 * k for k in range(4)]                      # window w: frames at 0.4 w + 0.8 k
        video = torch.from_numpy(crops[ids]).permute(3, 0, 1, 2)[None].float() / 255
        audio = window_fbanks(wave, [0.4 * w], 3.2, AudioFeatures.from_config(cfg), reuse_whole=True)
        with torch.inference_mode():
            logit = model(video, audio).logit.item()
        assert pred.window_logits[w] == pytest.approx(logit, abs=1e-5)


class WholeFrameDetector:
    """A 'face' filling the middle of every frame (no detection cost); counts frames seen."""

    def __init__(self) -> None:
        self.n_frames = 0

    def detect(self, frames):
        self.n_frames += len(frames)
        h, w = frames.shape[1:3]
        return [np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4, 1.0]], dtype=np.float32) for _ in frames]


def small_video(path: Path, seconds: float) -> Path:
    """64 x 64 at 5 fps with audio: cheap to write and decode."""
    n = round(seconds * 5)
    frames = np.random.default_rng(0).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return write_video(path, frames, 5, audio=td.speech_like(seconds))


class MeanModel(torch.nn.Module):
    """Stands in for the detector where only the plumbing matters: logit = mean pixel of the window."""

    def __init__(self) -> None:
        super().__init__()
        self.video_head = torch.nn.Identity()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, video, audio):
        from havic.models import DetectorOutput

        logit = self.scale * video.mean(dim=(1, 2, 3, 4))
        return DetectorOutput(logit=logit, audio_logit=None, video_logit=logit, has_audio=audio is not None)


def whole_frame_scorer(model, cfg, **kwargs):
    det = WholeFrameDetector()
    return inf.VideoScorer(model, cfg, FaceCropper(det, size=cfg.model.video.image_size), **kwargs), det


def test_scorer_official_grid_at_5_fps(tmp_path):
    cfg = td.tiny_config("model.video.num_frames=16", "data.fps=5.0")
    scorer, det = whole_frame_scorer(MeanModel(), cfg, batch_size=9)
    pred = scorer.score(small_video(tmp_path / "v.mp4", 10.0))
    # 18 windows of 16 frames at 0.2 s share the 0.2 s grid 0 .. 9.8: 50 distinct frames, not 288
    assert pred.n_windows == 18 and scorer.stats.n_frames == 50 and det.n_frames == 50
    assert scorer.stats.n_batches == 2


def test_streaming_peak_is_bounded(tmp_path):
    cfg = td.tiny_config()
    peaks, frames = {}, {}
    for seconds in (20.0, 40.0):
        scorer, _ = whole_frame_scorer(MeanModel(), cfg, batch_size=8)
        pred = scorer.score(small_video(tmp_path / f"{seconds}.mp4", seconds))
        assert pred.error is None and pred.n_windows == len(inf.plan_windows(seconds))
        peaks[seconds], frames[seconds] = scorer.stats.peak_frames_held, scorer.stats.n_frames
    assert frames[40.0] == 99                                    # the 0.4 s grid 0 .. 39.2
    # independent of the length: the crops of the windows in flight plus one detection batch
    assert peaks[40.0] == peaks[20.0] < frames[40.0] / 4
    assert peaks[40.0] <= cfg.data.face.batch_size + math.ceil((3.2 + 9 * 0.4) / 0.4) + 1


def test_batching_and_aggregation(tiny, videos):
    model, cfg = tiny
    preds = {}
    for batch, how in ((1, "mean"), (5, "max"), (8, "lse")):
        scorer, _ = scorer_for(model, cfg, batch_size=batch, aggregate=how)
        preds[how] = scorer.score(videos / "mute.mp4")
    logits = np.array(preds["mean"].window_logits)
    for how, p in preds.items():
        np.testing.assert_allclose(p.window_logits, logits, atol=1e-5)
        assert p.flags == ["no_audio"] and p.n_windows == 3
    assert preds["mean"].logit == pytest.approx(logits.mean(), abs=1e-6)
    assert preds["max"].logit == pytest.approx(logits.max(), abs=1e-6)
    lse = math.log(np.exp(logits).sum()) - math.log(3)
    assert preds["lse"].logit == pytest.approx(lse, abs=1e-6)
    assert preds["lse"].score == pytest.approx(1 / (1 + math.exp(-lse)))


def test_bf16_scoring_is_close_to_fp32_and_leaves_other_models_alone(tiny, videos):
    import copy

    model, cfg = tiny
    fp32 = scorer_for(model, cfg, batch_size=4)[0].score(videos / "talk10.mp4")
    half = copy.deepcopy(model)
    scorer, _ = scorer_for(half, cfg, batch_size=4, precision="bf16")
    assert scorer.precision == "bf16"
    pred = scorer.score(videos / "talk10.mp4")
    assert pred.error is None and pred.window_starts == fp32.window_starts
    # bf16 keeps 8 mantissa bits: logits of this tiny model move by a few hundredths at most.
    np.testing.assert_allclose(pred.window_logits, fp32.window_logits, atol=0.05)
    assert not np.array_equal(pred.window_logits, fp32.window_logits)    # the bf16 path really ran
    assert half.video_encoder.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.video_encoder.blocks[0].attn.qkv.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        scorer_for(copy.deepcopy(model), cfg, precision="fp16")
    with pytest.raises(ValueError, match="precision 'int8'"):
        scorer_for(copy.deepcopy(model), cfg, precision="int8")


def test_max_seconds_truncates_and_says_so(tiny, videos):
    model, cfg = tiny
    scorer, counting = scorer_for(model, cfg, max_seconds=5.0)
    pred = scorer.score(videos / "talk10.mp4")
    assert "truncated" in pred.flags and pred.duration_s == pytest.approx(10.0, abs=0.05)
    assert pred.window_starts == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 1.8])
    assert counting.n_frames == scorer.stats.n_frames == 11 + 4   # grid 0 .. 4.0, and 1.8 + 0.8 k


def test_faceless_windows_are_skipped_not_the_video(tiny, videos):
    model, cfg = tiny
    scorer, _ = scorer_for(model, cfg)
    pred = scorer.score(videos / "leaves.mp4")                   # face for 2.5 s of 7 s, max_gap_s 1.0
    assert pred.error is None and "skipped_windows" in pred.flags
    # frames at 0 .. 2.4 s have a face, 2.8 and 3.2 borrow the one at 2.4; a window ends 2.4 s after its start
    assert pred.window_starts == pytest.approx([0.0, 0.4, 0.8])


def test_scorer_settings_default_to_the_infer_section(tmp_path):
    cfg = td.tiny_config("infer.hop_s=0.8", "infer.aggregate=max", "infer.batch_size=3", "infer.max_seconds=6.0")
    scorer, _ = whole_frame_scorer(MeanModel(), cfg)
    assert (scorer.hop_s, scorer.aggregate, scorer.batch_size, scorer.max_seconds, scorer.precision) == \
        (0.8, "max", 3, 6.0, "fp32")
    pred = scorer.score(small_video(tmp_path / "v.mp4", 8.0))
    assert pred.window_starts == pytest.approx([0.0, 0.8, 1.6, 2.4, 2.8]) and "truncated" in pred.flags
    assert pred.logit == pytest.approx(max(pred.window_logits)) and scorer.stats.n_batches == 2
    # keyword arguments win over the configuration
    scorer, _ = whole_frame_scorer(MeanModel(), cfg, hop_s=0.4, aggregate="mean", batch_size=8)
    assert (scorer.hop_s, scorer.aggregate, scorer.batch_size) == (0.4, "mean", 8)


# ---------------------------------------------------------------------------------------------- loading


def test_load_detector_our_weights_and_overrides(tiny, tiny_weights):
    model, cfg = inf.load_detector(tiny_weights, config_overrides=["data.face.max_gap_s=2.0"])
    assert cfg.data.face.max_gap_s == 2.0 and cfg.data.face.detector == "haar" and not model.training
    x, a = torch.rand(2, 3, 4, 32, 32), torch.randn(2, 64, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, a).logit, tiny[0](x, a).logit)


def test_load_detector_refuses_pretraining_weights(tmp_path):
    cfg = td.tiny_config()
    path = save_weights(tmp_path / "pre.safetensors", build_model(cfg.model, "pretrain").state_dict(), cfg, "pretrain")
    with pytest.raises(CheckpointError, match=r"pre\.safetensors.*no detection heads"):
        inf.load_detector(path)


def test_untrained_heads_are_refused_unless_allowed_then_every_row_says_so(tmp_path, videos):
    from havic.checkpoints import HavicWeights, detector_heads
    from havic.cli import convert_weights

    cfg = td.tiny_config()
    pre = save_weights(tmp_path / "pre.safetensors", build_model(cfg.model, "pretrain").state_dict(), cfg, "pretrain")
    det = tmp_path / "det.safetensors"
    assert convert_weights.main(["pretrain-to-detector", "--in", str(pre), "--out", str(det)]) == 0
    with pytest.raises(CheckpointError, match=r"det\.safetensors: its detection heads were never trained .*"
                                              r"--allow-untrained-heads"):
        inf.load_detector(det)
    model, cfg = inf.load_detector(det, allow_untrained_heads=True)
    assert model.heads_trained is False
    pred = scorer_for(model, cfg)[0].score(videos / "mute.mp4")
    assert pred.error is None and pred.flags == ["no_audio", "untrained_heads"]
    assert "untrained_heads" in scorer_for(model, cfg)[0].score(videos / "missing.mp4").flags   # error rows too
    # Files that do not say: trained only when exported from a fine-tuning run past its first step.
    old = save_weights(tmp_path / "old.safetensors", model.state_dict(), cfg, "detector")
    with pytest.raises(CheckpointError, match="does not record whether its detection heads were trained"):
        inf.load_detector(old)
    finetuned = td.tiny_config("train.stage=finetune")
    assert detector_heads(HavicWeights({}, finetuned, "detector", {"global_step": "12"})) == "trained"
    assert detector_heads(HavicWeights({}, finetuned, "detector", {"global_step": "0"})) == "unknown"
    assert detector_heads(HavicWeights({}, cfg, "detector", {"heads": "untrained", "global_step": "12"})) == "untrained"


def test_official_reading_of_a_havic_file_says_drop_official(tiny_weights):
    with pytest.raises(CheckpointError, match=r"tiny_detector\.safetensors: this is a havic weights file, not an "
                                              r"official HAVIC state dict: drop --official"):
        inf.load_detector(tiny_weights, official=True)


def test_load_detector_official_state_dicts(tmp_path):
    from checkpoint_layouts import official_state_dict, small_official

    small = small_official()
    overrides = [td.TINY, "model.depth=12", "model.taps=[3,6,9,12]"]
    torch.save({"model": official_state_dict(small.model, "detector")}, tmp_path / "ft.pth")
    model, cfg = inf.load_detector(tmp_path / "ft.pth", config_overrides=overrides)
    assert cfg.model.variant == "official" and cfg.model.depth == 12
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 4, 32, 32), torch.randn(1, 64, 32))
    assert torch.isfinite(out.logit).all()
    assert inf.official_kind(official_state_dict(small.model, "detector")) == "detector"

    torch.save(official_state_dict(small.model, "pretrain"), tmp_path / "pt.pth")
    with pytest.raises(CheckpointError, match=r"pt\.pth.*HAVIC_PT.*no detection heads"):
        inf.load_detector(tmp_path / "pt.pth", config_overrides=overrides)
    with pytest.raises(CheckpointError, match="ft.pth.*does not fit"):      # 2 blocks, the file has 12
        inf.load_detector(tmp_path / "ft.pth", config_overrides=[td.TINY])
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="neither a havic weights file"):
        inf.load_detector(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no such weights file"):
        inf.load_detector(tmp_path / "missing.safetensors")


def test_load_detector_merges_yaml_files_with_include(tiny_weights, tmp_path):
    # `tools/infer.py --weights W configs/finetune/tiny.yaml` once failed: "stored config: invalid key 'include'"
    model, cfg = inf.load_detector(tiny_weights, config_overrides=[str(CONFIG_DIR / "finetune" / "tiny.yaml")])
    assert cfg.train.stage == "finetune" and cfg.train.name == "tiny-finetune" and not model.training
    (tmp_path / "base.yaml").write_text("infer: {hop_s: 0.8}\ndata: {face: {max_gap_s: 2.0}}\n")
    (tmp_path / "mine.yaml").write_text("include: [base.yaml]\ninfer: {aggregate: lse}\n")
    _, cfg = inf.load_detector(tiny_weights, config_overrides=[str(tmp_path / "mine.yaml"), "infer.batch_size=2"])
    assert (cfg.infer.hop_s, cfg.infer.aggregate, cfg.infer.batch_size) == (0.8, "lse", 2)
    assert cfg.data.face.max_gap_s == 2.0


# ---------------------------------------------------------------------------------------------- files


def test_collect_inputs(videos, tmp_path, caplog):
    write_manifest([ManifestRow("talk10.mp4", 0, 0, 0, "a", "real", "test"),
                    ManifestRow("mute.mp4", 1, 0, 1, "b", "FVRA", "test", {"method": "wl"})],
                   tmp_path / "m.csv")
    more = tmp_path / "more"
    (more / "sub").mkdir(parents=True)
    for name in ("a.m2ts", "sub/b.MTS", "c.ogv", "notes.doc", "still.jpg", ".hidden.mp4", "._c.mp4"):
        (more / name).write_bytes(b"")
    twice = f"{videos}/../{videos.name}/short.mp4"                      # short.mp4 by a second path
    items = inf.collect_inputs([str(tmp_path / "m.csv"), str(videos), str(tmp_path / "missing.mp4"),
                                str(videos / "notes.txt"), twice, str(more)], root=videos)
    by_path = {it.path: it for it in items}
    assert by_path["mute.mp4"].label == 1 and by_path["mute.mp4"].category == "FVRA"
    assert by_path["mute.mp4"].extra["method"] == "wl" and by_path["mute.mp4"].file == videos / "mute.mp4"
    # the folder's copies of the manifest's files and the second path to short.mp4 are the same files: kept once
    found = {Path(p).name for p in by_path if p.startswith(str(videos))}
    assert found == {"short.mp4", "leaves.mp4", "noface.mp4", "corrupt.mp4", "notes.txt"}
    assert twice not in by_path and str(tmp_path / "missing.mp4") in by_path
    assert {Path(p).name for p in by_path if p.startswith(str(more))} == {"a.m2ts", "b.MTS", "c.ogv"}
    assert len(items) == len(by_path) == 2 + 4 + 1 + 1 + 3
    text = caplog.text
    assert f"{videos}/talk10.mp4: the same file as talk10.mp4; scored once" in text
    assert f"{twice}: the same file as {videos}/short.mp4; scored once" in text
    assert "skipped 2 file(s) whose extension is not a video's (.doc 1, .jpg 1): notes.doc, still.jpg" in text
    assert "skipped 2 hidden file(s): ._c.mp4, .hidden.mp4" in text


def test_scorer_reports_windows_within_a_video(tmp_path):
    cfg = td.tiny_config()
    scorer, _ = whole_frame_scorer(MeanModel(), cfg, batch_size=4)
    seen: list[tuple[int, int]] = []
    scorer.progress = lambda done, planned: seen.append((done, planned))
    pred = scorer.score(small_video(tmp_path / "v.mp4", 8.0))
    planned = len(inf.plan_windows(8.0))                          # 13 windows: 0, 0.4 .. 4.4, 4.8
    assert pred.n_windows == planned == 13
    assert seen == [(0, 13), (4, 13), (8, 13), (12, 13), (13, 13)]


# ---------------------------------------------------------------------------------------------- journal


def tiny_job(tmp_path, model=None, **kwargs):
    """A MeanModel scorer (no detection cost) and three 4 s videos."""
    cfg = td.tiny_config(*kwargs.pop("overrides", ()))
    scorer, _ = whole_frame_scorer(model or MeanModel(), cfg, **kwargs)
    files = [small_video(tmp_path / f"v{i}.mp4", 4.0) for i in range(3)]
    return scorer, [inf.InferenceItem(str(f), f) for f in files]


def test_every_row_is_in_the_journal_before_the_next_video(tmp_path):
    scorer, items = tiny_job(tmp_path)
    out = tmp_path / "out" / "p.csv"
    journal = out.with_suffix(".journal.jsonl")
    seen_rows = []
    inner = scorer.score

    def score(file, **kw):          # what is on disk when each video starts
        seen_rows.append(len(read_journal(journal).rows))
        return inner(file, **kw)

    scorer.score = score
    preds = inf.run_inference(scorer, items, out, flush_every=100, progress=False)
    assert seen_rows == [0, 1, 2]
    content = read_journal(journal)
    assert [p.path for p in content.rows] == [it.path for it in items]
    assert [p.to_json() for p in content.rows] == [p.to_json() for p in preds]
    (sid,) = content.settings
    assert {p.settings for p in preds} == {sid} and content.settings[sid]["infer.hop_s"] == 0.4
    rounded = [{**p.to_json(), "seconds": round(p.seconds, 3)} for p in preds]     # the CSV keeps milliseconds
    assert [p.to_json() for p in inf.read_predictions(out)] == rounded


def test_resume_reads_the_journal_and_refuses_other_settings(tmp_path):
    scorer, items = tiny_job(tmp_path)
    out = tmp_path / "p.csv"
    first = inf.run_inference(scorer, items[:2], out, progress=False)
    out.unlink()                                       # only the journal is left, as after a kill
    again = inf.run_inference(scorer, items, out, tmp_path / "p.json", resume=True, progress=False)
    assert [p.to_json() for p in again[:2]] == [p.to_json() for p in first]
    assert len(read_journal(out.with_suffix(".journal.jsonl")).rows) == 3    # the kept rows were not scored again
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["hop_s"] == 0.4 and list(data["settings"]) == [data["settings_id"]]

    other, _ = tiny_job(tmp_path, overrides=["infer.hop_s=0.8", "infer.aggregate=max"])
    with pytest.raises(ResumeError, match=r"3 row\(s\) made with infer.aggregate: 'mean' -> 'max', "
                                          r"infer.hop_s: 0.4 -> 0.8 \(before -> now\).*--resume-mixed"):
        inf.run_inference(other, items, out, resume=True, progress=False)
    model = MeanModel()
    with torch.no_grad():
        model.scale.fill_(2.0)                         # other weights, same configuration
    other, _ = tiny_job(tmp_path, model=model)
    with pytest.raises(ResumeError, match="weights_sha256"):
        inf.run_inference(other, items, out, resume=True, progress=False)
    mixed = inf.run_inference(other, [*items, inf.InferenceItem("gone.mp4", tmp_path / "gone.mp4")], out,
                              tmp_path / "p.json", resume=True, resume_mixed=True, progress=False)
    assert len({p.settings for p in mixed}) == 2 and mixed[3].error == "not_found"
    data = json.loads((tmp_path / "p.json").read_text())
    assert "hop_s" not in data and len(data["settings"]) == 2     # mixed: no header claims one setting for all


def test_stale_temporary_files_are_removed_before_a_job(tmp_path):
    scorer, items = tiny_job(tmp_path)
    stale = tmp_path / ".p.0123abcd.tmp.csv"
    stale.write_text("half a CSV")
    os.utime(stale, (1e9, 1e9))
    with atomic_path(tmp_path / "other.json") as live:      # a writer at work in this process keeps its file
        os.utime(live, (1e9, 1e9))
        inf.run_inference(scorer, items[:1], tmp_path / "p.csv", progress=False)
        assert live.is_file()
    assert not stale.exists()


# ---------------------------------------------------------------------------------------------- CLI


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_infer_cli_one_row_per_input(tiny_weights, videos, assets_dir, tmp_path, capsys):
    megamind = str(assets_dir / "media" / "megamind.avi")
    inputs = [megamind] + [str(videos / n) for n in ("talk10.mp4", "mute.mp4", "short.mp4", "noface.mp4",
                                                     "corrupt.mp4", "notes.txt", "missing.mp4")]
    out, js, rep = tmp_path / "pred.csv", tmp_path / "pred.json", tmp_path / "report"
    common = ["--weights", str(tiny_weights), "--face-detector", "haar", "--out", str(out), "--no-progress"]
    assert infer_cli.main(inputs[:-1] + common + ["--json", str(js), "--report-dir", str(rep),
                                                  "--batch-size", "6", "data.face.batch_size=8"]) == 1  # 3 failed
    rows = read_rows(out)
    assert list(rows) == inputs[:-1]
    mm = rows[megamind]
    assert mm["error"] == "" and 0 <= float(mm["score"]) <= 1 and "corrupt_packets" in mm["flags"].split(";")
    assert int(mm["n_windows"]) == len(inf.plan_windows(float(mm["duration_s"]))) == 22
    assert len(mm["window_logits"].split(";")) == 22
    assert rows[inputs[1]]["flags"] in ("", "filled_frames") and rows[inputs[1]]["n_windows"] == "18"
    assert rows[inputs[2]]["flags"].split(";")[0] == "no_audio" and rows[inputs[2]]["n_windows"] == "3"
    assert "padded" in rows[inputs[3]]["flags"] and rows[inputs[3]]["n_windows"] == "1"
    assert rows[inputs[4]]["error"] == "no_face" and rows[inputs[4]]["score"] == ""
    assert rows[inputs[5]]["error"] == "unreadable" and rows[inputs[6]]["error"] == "unreadable"
    data = json.loads(js.read_text())
    assert [p["path"] for p in data["predictions"]] == inputs[:-1] and data["aggregate"] == "mean"
    assert data["predictions"][0]["window_logits"] == pytest.approx([float(x) for x in mm["window_logits"].split(";")])
    pictures = sorted(p.name for p in rep.glob("*.png"))
    assert pictures == sorted(picture_name(p) for p in inputs[:4])
    page = (rep / "index.html").read_text()
    assert all(p in page for p in inputs[:-1]) and "no_face" in page
    text = capsys.readouterr().out
    assert "scored 4 of 7 videos, failed 3 (unreadable 2, no_face 1)" in text

    # resume: the old rows are kept as they are, only the new input is processed
    before = out.read_text()
    assert infer_cli.main(inputs + common + ["--resume"]) == 1
    rows2 = read_rows(out)
    assert list(rows2) == inputs and rows2[inputs[-1]]["error"] == "not_found"
    assert all(rows2[p] == rows[p] for p in inputs[:-1])
    assert before.splitlines()[1:] == out.read_text().splitlines()[1:-1]


def test_infer_cli_precision_is_used_and_recorded(tiny_weights, videos, tmp_path, capsys):
    common = ["--weights", str(tiny_weights), "--face-detector", "haar", "--no-progress"]
    logits = {}
    for precision in ("fp32", "bf16"):
        js = tmp_path / f"{precision}.json"
        assert infer_cli.main([str(videos / "talk10.mp4"), *common, "--out", str(tmp_path / f"{precision}.csv"),
                               "--json", str(js), "--precision", precision]) == 0
        data = json.loads(js.read_text())
        assert data["precision"] == precision
        logits[precision] = data["predictions"][0]["window_logits"]
    np.testing.assert_allclose(logits["bf16"], logits["fp32"], atol=0.05)
    assert logits["bf16"] != logits["fp32"]
    # fp16 has no CPU path: a clear error, no output file
    capsys.readouterr()
    out = tmp_path / "fp16.csv"
    assert infer_cli.main([str(videos / "talk10.mp4"), *common, "--out", str(out), "--precision", "fp16",
                           "--device", "cpu"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err and not out.exists()


def test_infer_cli_flags_and_infer_overrides_are_one_setting(tiny_weights, videos, tmp_path):
    common = [str(videos / "mute.mp4"), "--weights", str(tiny_weights), "--face-detector", "haar", "--no-progress"]
    runs = {"flag": ["--hop-seconds", "0.8", "--aggregate", "max"],
            "override": ["infer.hop_s=0.8", "infer.aggregate=max"],
            "both": ["infer.hop_s=0.4", "--hop-seconds", "0.8", "--aggregate", "max"]}     # the flag wins
    for name, extra in runs.items():
        js = tmp_path / f"{name}.json"
        assert infer_cli.main([*common, *extra, "--out", str(tmp_path / f"{name}.csv"), "--json", str(js)]) == 0
        data = json.loads(js.read_text())
        assert (data["hop_s"], data["aggregate"]) == (0.8, "max"), name
        assert data["predictions"][0]["window_starts"] == pytest.approx([0.0, 0.8]), name


def test_infer_cli_bad_weights(tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(b"garbage")
    assert infer_cli.main([str(tmp_path), "--weights", str(tmp_path / "w.pth"), "--no-progress"]) == 2
    assert "w.pth" in capsys.readouterr().err
