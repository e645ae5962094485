"""Killed jobs keep their work: real processes, real signals, then ``--resume`` and the clean-up of temporary files.

``tools/infer.py`` scores two short videos and then a long one; the signal goes to its process
group (as ``setsid ... & kill -9 -- -$!`` does) as soon as the journal holds the two short ones,
while the long one is being scored. Whatever the timing, every row the process finished must be
on disk, and ``--resume`` must keep exactly those and score only the others.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tiny_detector as td
from havic.inference.journal import read_journal
from havic.predictions import read_predictions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, list[Path]]:
    """The tiny detector and the videos: two of 4 s, one of 30 s (seconds to score), one more of 4 s."""
    weights, _ = td.tiny_checkpoint(str(tmp_path_factory.getbasetemp()))
    root = tmp_path_factory.mktemp("kill_videos")
    videos = [td.write_talking_video(root / f"v{i}.mp4", 4.0) for i in range(2)]
    videos.append(td.write_talking_video(root / "long.mp4", 30.0))
    videos.append(td.write_talking_video(root / "v3.mp4", 4.0))
    return weights, videos


def infer(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "tools" / "infer.py"), *args, "--no-progress"]


def start_and_signal(cmd: list[str], journal: Path, sig: int, cwd: Path) -> subprocess.Popen:
    """Start `cmd` in its own session; send `sig` to its group once the journal holds two rows."""
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (journal.is_file() and len(read_journal(journal).rows) >= 2):
        assert proc.poll() is None, f"ended before the signal: {proc.communicate()}"
        assert time.monotonic() < deadline, "no rows after 120 s"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    return proc


def test_sigkill_keeps_every_finished_row_and_resume_recovers_them(job, tmp_path):
    weights, videos = job
    out = tmp_path / "p.csv"
    journal = out.with_suffix(".journal.jsonl")
    common = ["--weights", str(weights), "--out", str(out)]
    proc = start_and_signal(infer(*map(str, videos[:3]), *common), journal, signal.SIGKILL, tmp_path)
    assert proc.returncode == -signal.SIGKILL
    kept = read_journal(journal).rows
    assert len(kept) >= 2 and all(p.error is None for p in kept)
    assert read_predictions(out) == []                 # the CSV waits for 20 rows: the journal alone kept them

    again = [videos[0], videos[1], videos[3]]          # the long one is left out: resuming is what is timed
    done = subprocess.run(infer(*map(str, again), *common, "--resume"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {p.path: p for p in read_predictions(out)}
    assert list(rows)[:3] == [str(v) for v in again] and set(rows) == {p.path for p in kept} | set(map(str, again))
    for p in kept:                                     # kept as they were, not scored again
        assert (rows[p.path].score, rows[p.path].window_logits) == (p.score, p.window_logits)
    assert len(read_journal(journal).rows) == len(kept) + 1       # v3 alone was scored


def test_sigterm_writes_the_finished_rows_and_exits_143(job, tmp_path):
    weights, videos = job
    out = tmp_path / "p.csv"
    cmd = infer(*map(str, videos[:3]), "--weights", str(weights), "--out", str(out), "--json", str(tmp_path / "p.json"))
    proc = start_and_signal(cmd, out.with_suffix(".journal.jsonl"), signal.SIGTERM, tmp_path)
    assert proc.returncode == 143, proc.stderr.read()
    rows = read_predictions(out)
    assert [p.path for p in rows] == [p.path for p in read_journal(out.with_suffix(".journal.jsonl")).rows]
    assert len(rows) >= 2 and [p.path for p in read_predictions(tmp_path / "p.json")] == [p.path for p in rows]


WRITER = """
import sys, time
from havic.utils.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"PK\\x03\\x04 half a zip")
    print("writing", flush=True)
    time.sleep(600)
"""


def test_a_killed_writers_temporary_file_is_removed_by_the_next_job(job, tmp_path):
    weights, videos = job
    out = tmp_path / "out"
    killed = subprocess.Popen([sys.executable, "-c", WRITER, str(out / "p.csv")], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-c", WRITER, str(out / "p.json")], stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline().strip() == "writing" and live.stdout.readline().strip() == "writing"
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        temps = sorted(out.glob(".*.tmp*"))
        assert [t.name.split(".")[1] for t in temps] == ["p", "p"]
        for t in temps:                                # both look old: only the lock tells them apart
            os.utime(t, (time.time() - 60, time.time() - 60))
        done = subprocess.run(infer(str(videos[0]), "--weights", str(weights), "--out", str(out / "p.csv")),
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert [t.suffix for t in out.glob(".*.tmp*")] == [".json"]   # the live writer's file is left alone
    finally:
        live.kill()
        live.wait()
