"""Reports: what the per-video picture says, an index that fits the screen, markdown pages, preview losses."""
from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from havic.config import CONFIG_DIR, load_config
from havic.data.synthetic_clips import SyntheticClips, batch_of
from havic.lit.callbacks import ReconstructionPreview, reconstruction_errors
from havic.lit.pretrain import PretrainModule
from havic.losses import reconstruction_loss
from havic.predictions import VideoPrediction
from havic.report import markdown_html, picture_title, write_index, write_markdown_page, write_video_report

SCREEN_PX = 1280


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def figure_text(monkeypatch) -> list[dict[str, str]]:
    """The titles of every figure saved while the test runs."""
    seen: list[dict[str, str]] = []
    save = Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.append({"suptitle": fig._suptitle.get_text() if fig._suptitle else "",
                     "axes": fig.axes[0].get_title() if fig.axes else ""})
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def scored(path: str = "clips/a.mp4", logits=(0.5, 1.5, 1.0), aggregate: str = "mean") -> VideoPrediction:
    from havic.metrics import aggregate_windows, sigmoid

    logit = aggregate_windows(logits, aggregate)
    return VideoPrediction(path, sigmoid(logit), logit, 1, len(logits), [0.4 * i for i in range(len(logits))],
                           list(logits), duration_s=4.0, aggregate=aggregate,
                           sample_crops=[np.full((32, 32, 3), 90, np.uint8)] * 3, sample_times=[0.0, 1.6, 3.2])


def test_picture_title_says_the_score_is_the_sigmoid_of_the_aggregated_logit(tmp_path: Path, figure_text):
    # mean of (0.5, 1.5, 1.0) = 1.0; sigmoid(1.0) = 0.7311
    assert picture_title(scored()) == "a.mp4: score 0.731 = sigmoid(1.000), the mean window logit of 3 windows"
    assert picture_title(scored(aggregate="max")) == (
        "a.mp4: score 0.818 = sigmoid(1.500), the largest window logit of 3 windows")
    assert picture_title(scored(logits=(2.0,), aggregate="lse")) == (
        "a.mp4: score 0.881 = sigmoid(2.000), the log-mean-exp of the window logits of 1 window")
    write_video_report(scored(), tmp_path)
    assert figure_text[-1]["axes"].startswith("a.mp4: score 0.731 = sigmoid(1.000), the mean window logit")
    assert "mean of 3 windows" not in figure_text[-1]["axes"]


def test_index_shows_pictures_unscaled_within_a_1280_px_screen(tmp_path: Path):
    long_path = "very/" * 30 + "long_name_without_spaces_" * 4 + ".mp4"
    preds = [scored(long_path), VideoPrediction("b.mp4", error="no_face", error_detail="no face in any window")]
    png = write_video_report(preds[0], tmp_path)
    width, _ = png_size(png)
    assert 900 <= width <= SCREEN_PX - 80  # drawn for the page: readable unscaled, narrower than the screen
    page = write_index(preds, tmp_path).read_text()
    assert 'width="320"' not in page  # the old 320 px thumbnails (a 800 px figure at 40 %: unreadable)
    assert "table-layout:fixed" in page and "width:100%" in page and "overflow-wrap:anywhere" in page
    assert "img{max-width:100%;height:auto" in page
    assert f'<tr class="picture"><td colspan="8"><a href="{png.name}"><img src="{png.name}"' in page
    widths = [int(w) for w in __import__("re").findall(r'<col style="width:(\d+)%">', page)]
    assert len(widths) == 8 and sum(widths) == 100
    assert "b.mp4" in page and "no_face: no face in any window" in page and page.count('class="picture"') == 1


def test_markdown_pages_render_tables_lists_code_and_escape_text(tmp_path: Path):
    md = tmp_path / "report.md"
    md.write_text("### Video-level metrics: <run>\n\nCoverage: scored **5** of 5; see `metrics.json`.\n\n"
                  "| set | ACC | note |\n|---|---:|:---:|\n| all | 80.00 | a & b |\n\n"
                  "- HAVIC: [report](scores/index.html)\n- w/o HCP: *scratch*\n\n```\n  a  <b>\n```\n")
    page = write_markdown_page(md, title="evaluation").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>evaluation</title>" in page
    assert "<h3>Video-level metrics: &lt;run&gt;</h3>" in page
    assert "<p>Coverage: scored <strong>5</strong> of 5; see <code>metrics.json</code>.</p>" in page
    assert ('<tr><th>set</th><th style="text-align:right">ACC</th><th style="text-align:center">note</th></tr>'
            '<tr><td>all</td><td style="text-align:right">80.00</td><td style="text-align:center">a &amp; b</td></tr>'
            in page)
    assert '<ul><li>HAVIC: <a href="scores/index.html">report</a></li><li>w/o HCP: <em>scratch</em></li></ul>' in page
    assert "<pre><code>  a  &lt;b&gt;</code></pre>" in page
    assert (tmp_path / "report.html").is_file()
    assert "<ol><li>one</li><li>two more</li></ol>\n<p>text</p>" in markdown_html("1. one\n2. two\n   more\n\ntext")


def test_demo_index_links_the_evaluation_report_as_html(tmp_path: Path):
    from havic.demo.report import DemoReport

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "report.md").write_text("| set | AUC |\n|---|---:|\n| all | 99.00 |\n")
    DemoReport(tmp_path, "table", {"data": 1.0}, evaluation, {}, [], {}).write()
    index = (tmp_path / "index.html").read_text()
    assert "href='evaluation/report.html'" in index and "report.md'" not in index
    assert '<td style="text-align:right">99.00</td>' in (evaluation / "report.html").read_text()


def test_reconstruction_previews_show_the_losses(tmp_path: Path, figure_text):
    cfg = load_config([CONFIG_DIR / "pretrain" / "tiny.yaml"])
    module = PretrainModule(cfg)
    clips = SyntheticClips(2, num_frames=4, image_size=32, audio_frames=64, num_mel_bins=32)
    batch = batch_of(clips, [0, 1])
    tensors = module.reconstruct(batch, num=1)
    # The shown clip's error is the paper's loss (masked tokens) of the last decoder layer.
    module.eval()
    sub = {k: v[:1] for k, v in batch.items() if k in ("video", "audio", "index")}
    with torch.no_grad():
        out = module(sub["video"], sub["audio"], ids_keep=module.validation_masks(sub))
    errors = reconstruction_errors(tensors)
    assert errors["video"] == pytest.approx(float(reconstruction_loss(out.video_preds[-1], out.video_target,
                                                                      out.video_hidden)), rel=1e-5)
    assert errors["audio"] == pytest.approx(float(reconstruction_loss(out.audio_preds[-1], out.audio_target,
                                                                      out.audio_hidden)), rel=1e-5)

    metrics = {"train/loss": torch.tensor(1.25), "train/rec_video": torch.tensor(0.0625),
               "train/contrastive": torch.tensor(2.0)}
    trainer = SimpleNamespace(global_step=5, is_global_zero=True, loggers=[], callback_metrics=metrics)
    ReconstructionPreview(tmp_path, every_n_steps=5, num_frames=2).on_train_batch_end(trainer, module, None, batch, 0)
    title = figure_text[-1]["suptitle"]
    assert title.splitlines() == [
        "step 5, batch losses: loss 1.2500, rec_video 0.0625, contrastive 2.0000",
        f"this clip, last decoder layer, masked patches: MSE video {errors['video']:.4f}, "
        f"audio {errors['audio']:.4f}"]


def test_report_docstring_examples_run():
    import doctest

    import havic.report

    result = doctest.testmod(havic.report)
    assert result.attempted > 0 and result.failed == 0
