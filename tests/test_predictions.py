"""Prediction rows: CSV and JSON round trips, and the picture report drawn from them."""
from __future__ import annotations

import numpy as np

from havic.predictions import VideoPrediction, read_predictions, write_predictions_csv, write_predictions_json
from havic.report import picture_name, write_index, write_video_report


def test_predictions_round_trip(tmp_path):
    preds = [VideoPrediction("a.mp4", 0.75, 1.0986, 1, 2, [0.0, 0.4], [1.0, 1.1972], ["no_audio"],
                             duration_s=3.6, category="FVFA", extra={"method": "wl"}),
             VideoPrediction("b, c.mp4", error="no_face", error_detail='none in "all" frames', seconds=0.5)]
    for name in ("p.csv", "p.json"):
        writer = write_predictions_csv if name.endswith("csv") else write_predictions_json
        writer(preds, tmp_path / name)
        back = read_predictions(tmp_path / name)
        for a, b in zip(back, preds):
            assert a.to_json() == b.to_json()


def test_report_files(tmp_path):
    ok = VideoPrediction("x/<v>.mp4", 0.8, 1.386, 1, 3, [0.0, 0.4, 0.8], [1.0, 2.0, 1.2], ["padded"],
                         duration_s=4.0, sample_crops=[np.full((32, 32, 3), 90, np.uint8)] * 3,
                         sample_times=[0.0, 1.6, 3.2])
    bad = VideoPrediction("y.mp4", error="unreadable", error_detail="moov atom not found")
    png = write_video_report(ok, tmp_path)
    assert png == tmp_path / picture_name(ok.path) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_video_report(bad, tmp_path) is None
    page = write_index([ok, bad], tmp_path).read_text()
    assert "x/&lt;v&gt;.mp4" in page and "unreadable: moov atom not found" in page
    assert f'src="{png.name}"' in page and "2 videos: 1 scored, 1 failed" in page
