"""Feature extractors: time-axis rules on hand-made tensors, HAVIC segment means by hand, tiny HF models offline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from havic.checkpoints import save_weights
from havic.data.video import iter_frames_at, probe, read_audio
from havic.features.align import chunk_spans, segment_means, stack_pairs
from havic.features.havic_encoder import HavicExtractor
from havic.features.hf import ClipExtractor, VideoMAEExtractor, Wav2Vec2Extractor
from havic.models import build_model
from tiny_detector import TINY_OVERRIDES, tiny_config, write_talking_video
from tiny_features import noise_video, save_clip, save_videomae, save_wav2vec2


# -- time-axis rules ---------------------------------------------------------------------------


def test_stack_pairs_odd_repeats_last_frame():
    x = torch.arange(10.0).view(5, 2)          # rows [0,1], [2,3], [4,5], [6,7], [8,9]
    y = stack_pairs(x)
    assert y.shape == (3, 4)                   # ceil(5 / 2)
    assert y.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]]
    assert stack_pairs(torch.ones(4, 3)).shape == (2, 6)
    assert stack_pairs(torch.ones(0, 3)).shape == (0, 6)


def test_chunk_rule_drops_the_partial_chunk():
    assert chunk_spans(41, 16) == [(0, 16), (16, 32)]     # frames 0..40: 2 chunks, 32..40 dropped
    assert chunk_spans(15, 16) == []
    assert chunk_spans(32, 16) == [(0, 16), (16, 32)]


def test_segment_means_by_hand():
    tokens = torch.arange(12.0).view(1, 6, 2)
    out = segment_means(tokens, torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    assert out.tolist() == [[[2.0, 3.0], [8.0, 9.0]]]


# -- HAVIC ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory):
    cfg = tiny_config()
    torch.manual_seed(3)
    model = build_model(cfg.model, "pretrain")
    folder = tmp_path_factory.mktemp("havic")
    return save_weights(folder / "pretrain.safetensors", model.state_dict(), cfg, "pretrain"), folder


def test_havic_segments_equal_hand_means(tiny_pretrain):
    """4.0 s, 1.6 s segments: rows 0-1 from the window at 0, row 2 = last segment of the window at 0.8 s."""
    weights, folder = tiny_pretrain
    video = write_talking_video(folder / "talk.mp4", 4.0)
    ex = HavicExtractor(weights, config_overrides=TINY_OVERRIDES, batch_size=1)
    seen = {"video": [], "audio": []}
    ex.model.video_encoder.register_forward_hook(lambda m, i, o: seen["video"].append(i[0].clone()))
    ex.model.audio_encoder.register_forward_hook(lambda m, i, o: seen["audio"].append(i[0].clone()))
    seqs = {s.name: s for s in ex.extract(video)}
    assert len(seen["video"]) == 2                        # windows at 0 and at 4.0 - 3.2 = 0.8
    v_in, a_in = torch.cat(seen["video"]), torch.cat(seen["audio"])
    m = ex.model
    with torch.no_grad():
        v_enc, a_enc = m.video_encoder(v_in), m.audio_encoder(a_in)
        v_fused, _ = m.fusion(v_enc.sequence(), a_enc.sequence())
    s = m.num_segments
    expected_rows = [(0, 0), (0, 1), (1, 1)]              # (window, segment) of rows 0, 1, 2
    for tap in m.taps:
        seq = seqs[f"havic/video/{tap}"]
        assert seq.length == math.ceil(4.0 / 1.6) and seq.rate_hz == pytest.approx(1 / 1.6)
        for row, (w, j) in enumerate(expected_rows):
            hand = v_enc.taps[tap][w, j, 1:].mean(dim=0)   # the segment's patch tokens, CLS (index 0) left out
            torch.testing.assert_close(seq.values[row], hand)
            hand_a = a_enc.taps[tap][w, j, 1:].mean(dim=0)
            torch.testing.assert_close(seqs[f"havic/audio/{tap}"].values[row], hand_a)
    fused = v_fused.view(2, s, -1, v_fused.shape[-1])[:, :, 1:]   # drop each segment's CLS
    for row, (w, j) in enumerate(expected_rows):
        torch.testing.assert_close(seqs["havic/video/fusion"].values[row], fused[w, j].mean(dim=0))
    assert seqs["havic/video/fusion"].modality == "audio-visual"
    assert seqs["havic/video/1"].meta["tail_shift_s"] == pytest.approx(0.8)   # row 2 starts at 3.2, data at 2.4
    assert ex.settings()["kind"] == "pretrain"


def test_havic_window_mode(tiny_pretrain):
    weights, folder = tiny_pretrain
    video = write_talking_video(folder / "talk4.mp4", 4.0)
    ex = HavicExtractor(weights, config_overrides=TINY_OVERRIDES, mode="windows", hop_s=0.4)
    seq = {s.name: s for s in ex.extract(video)}["havic/video/2/window"]
    assert seq.length == 3 and seq.rate_hz == pytest.approx(2.5)        # windows at 0, 0.4, 0.8


# -- Hugging Face backbones, tiny random models, offline ---------------------------------------


@pytest.fixture(scope="module")
def video41(tmp_path_factory):
    return noise_video(tmp_path_factory.mktemp("hf") / "v41.mp4", 41)


def test_wav2vec2_pairs(tmp_path, video41):
    ex = Wav2Vec2Extractor(save_wav2vec2(tmp_path / "w2v"))
    (seq,) = ex.extract(video41)
    wave = read_audio(video41, 16000)
    with torch.no_grad():
        hidden = ex.model(ex.processor(wave, sampling_rate=16000, return_tensors="pt")["input_values"])[0][0]
    n = hidden.shape[0]
    assert 75 <= n <= 90                               # about 50 Hz over 1.64 s
    assert seq.length == math.ceil(n / 2) and seq.dim == 32 and seq.rate_hz == 25.0
    torch.testing.assert_close(seq.values, stack_pairs(hidden))
    assert ex.settings()["fingerprint"] != ""


def test_clip_every_frame(tmp_path, video41):
    ex = ClipExtractor(save_clip(tmp_path / "clip"), batch_size=16)
    (seq,) = ex.extract(video41)
    assert seq.length == 41 and seq.dim == 8 and seq.rate_hz == pytest.approx(25.0)
    _, first = next(iter_frames_at(video41, [0.0]))
    with torch.no_grad():
        hand = ex.model(**ex.processor(images=[first], return_tensors="pt")).image_embeds[0]
    torch.testing.assert_close(seq.values[0], hand)


def test_videomae_chunks(tmp_path, video41):
    ex = VideoMAEExtractor(save_videomae(tmp_path / "vmae"), batch_size=1)
    (seq,) = ex.extract(video41)
    assert probe(video41).n_frames in (None, 41)
    assert seq.length == 16 and seq.dim == 16 and seq.rate_hz == pytest.approx(12.5)
    frames = [f for _, f in iter_frames_at(video41, np.arange(16, 32) / 25)]   # the second chunk
    with torch.no_grad():
        hidden = ex.model(**ex.processor(frames, return_tensors="pt")).last_hidden_state[0]   # (8 * 16, D)
    torch.testing.assert_close(seq.values[8:16], hidden.view(8, 16, -1).mean(dim=1))


# -- random-initialisation twins (the shortcut baseline) ---------------------------------------


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def test_havic_random_init_twin(tiny_pretrain):
    weights, _ = tiny_pretrain
    trained = HavicExtractor(weights, config_overrides=TINY_OVERRIDES)
    twin = HavicExtractor(weights, config_overrides=TINY_OVERRIDES, random_init=5)
    again = HavicExtractor(weights, config_overrides=TINY_OVERRIDES, random_init=5)
    other = HavicExtractor(weights, config_overrides=TINY_OVERRIDES, random_init=6)
    assert dict(twin.model.named_parameters()).keys() == dict(trained.model.named_parameters()).keys()
    assert not _same_parameters(twin.model, trained.model)       # fresh weights, not the file's
    assert _same_parameters(twin.model, again.model)             # the seed fixes them
    assert not _same_parameters(twin.model, other.model)
    assert twin.settings()["random_init"] == 5 and trained.settings()["random_init"] is None
    assert twin.settings()["fingerprint"] != trained.settings()["fingerprint"]   # a store refuses mixing them


def test_hf_random_init_twin(tmp_path, video41):
    folder = save_clip(tmp_path / "clip")
    trained = ClipExtractor(folder, batch_size=16)
    # seed 7: the tiny test model itself was made from seed 0, which the twin of seed 0 would reproduce
    twin = ClipExtractor(folder, batch_size=16, random_init=7)
    again = ClipExtractor(folder, batch_size=16, random_init=7)
    assert type(twin.model) is type(trained.model) and not _same_parameters(twin.model, trained.model)
    assert _same_parameters(twin.model, again.model)
    assert twin.settings()["random_init"] == 7 and twin.settings()["fingerprint"].startswith("random-init:7:")
    (a,), (b,) = twin.extract(video41), trained.extract(video41)
    assert a.values.shape == b.values.shape and not torch.allclose(a.values, b.values)
