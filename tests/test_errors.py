"""Bad input through the commands as users run them (subprocesses): exit 2 and one line naming the file
and the reason, never a traceback; a run that scored nothing or failed an item exits 1.

The commands start together (a few at a time) in a module fixture; each test reads its own result.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import tiny_detector as td
from havic.checkpoints import detector_from_pretrainer, save_weights
from havic.cli import infer as infer_cli
from havic.config import CONFIG_DIR
from havic.data.manifest import ManifestRow, write_manifest
from havic.models import build_model
from havic.predictions import read_predictions

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = str(CONFIG_DIR / "pretrain" / "tiny.yaml")


class Exploit:
    """Runs a shell command when unpickled: what a malicious weights file carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def facexzoo_pickle(path: Path, payload: object) -> Path:
    """A legacy torch.save header, as FaceX-Zoo's .pkl has, then `payload`."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    with open(path, "wb") as f:
        for obj in (MAGIC_NUMBER, PROTOCOL_VERSION,
                    {"protocol_version": PROTOCOL_VERSION, "little_endian": True, "type_sizes": {}}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump(payload, f, protocol=2)
    return path


def cases(d: Path, weights: Path) -> dict[str, list[str]]:
    """name -> the command line (tools/<script>.py and its arguments)."""
    w = ["--weights", str(weights), "--no-progress"]
    video = str(d / "vids" / "x.mp4")
    return {
        "infer_truncated": ["infer", video, "--weights", str(d / "trunc.safetensors")],
        "evaluate_truncated": ["evaluate", "--manifest", str(d / "m.csv"), "--weights", str(d / "trunc.safetensors")],
        "convert_truncated": ["convert_weights", "pretrain-to-detector", "--in", str(d / "trunc.safetensors"),
                              "--out", str(d / "det.safetensors")],
        "train_init_truncated": ["train", PRETRAIN, f"train.init_from={d / 'trunc.safetensors'}",
                                 f"train.run_dir={d / 'runs'}"],
        "train_resume_malicious": ["train", PRETRAIN, f"train.resume={d / 'evil.ckpt'}", f"train.run_dir={d / 'runs'}"],
        "infer_weights_malicious": ["infer", video, "--weights", str(d / "evil.ckpt")],
        "infer_face_malicious": ["infer", video, *w, "--face-detector", "retinaface", "--face-weights",
                                 str(d / "evil.pkl")],
        "infer_face_missing": ["infer", video, *w, "--face-detector", "retinaface", "--face-weights",
                               "checkpoints/facexzoo"],
        "infer_official_on_havic": ["infer", video, *w, "--official"],
        "infer_untrained_heads": ["infer", video, "--weights", str(d / "untrained.safetensors")],
        "infer_empty_folder": ["infer", str(d / "empty"), *w],
        "infer_missing_and_text": ["infer", str(d / "missing.mp4"), str(d / "vids" / "notes.txt"), *w,
                                   "--out", str(d / "failed.csv")],
        "infer_folder": ["infer", str(d / "vids"), f"{d}/vids/../vids/x.mp4", *w, "--out", str(d / "folder.csv")],
        "evaluate_empty_split": ["evaluate", "--manifest", str(d / "train_only.csv"), *w[:2],
                                 "--out-dir", str(d / "eval")],
        "infer_resume_other_settings": ["infer", video, *w, "--out", str(d / "done.csv"), "--resume",
                                        "--hop-seconds", "0.8"],
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """name -> (exit code, stderr, folder) of every case, run 4 at a time."""
    d = tmp_path_factory.mktemp("errors")
    weights, _ = td.tiny_checkpoint(str(tmp_path_factory.getbasetemp()))
    data = weights.read_bytes()
    (d / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": {"a": torch.zeros(2)}, "hyper_parameters": Exploit(d / "pwned")}, d / "evil.ckpt")
    facexzoo_pickle(d / "evil.pkl", Exploit(d / "pwned"))
    cfg = td.tiny_config()
    model, _ = detector_from_pretrainer(build_model(cfg.model, "pretrain").state_dict(), cfg)
    save_weights(d / "untrained.safetensors", model.state_dict(), cfg, "detector", heads="untrained")
    (d / "empty").mkdir()
    td.write_talking_video(d / "vids" / "x.mp4", 4.0)
    td.write_talking_video(d / "vids" / "y.m2ts", 4.0)
    (d / "vids" / "notes.txt").write_text("not a video\n")
    write_manifest([ManifestRow("vids/x.mp4", 0, 0, 0, "a", "RVRA", "test")], d / "m.csv")
    write_manifest([ManifestRow("vids/x.mp4", 0, 0, 0, "a", "RVRA", "train")], d / "train_only.csv")
    assert infer_cli.main([str(d / "vids" / "x.mp4"), "--weights", str(weights), "--out", str(d / "done.csv"),
                           "--no-progress"]) == 0                   # the run that infer_resume_other_settings resumes

    def run(argv: list[str]) -> tuple[int, str, Path]:
        res = subprocess.run([sys.executable, str(ROOT / "tools" / f"{argv[0]}.py"), *argv[1:]], cwd=d,
                             capture_output=True, text=True, timeout=300)
        return res.returncode, res.stderr, d

    todo = cases(d, weights)
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(todo, pool.map(run, todo.values())))
    assert not (d / "pwned").exists(), "a malicious file ran code"
    return done


def one_error(result: tuple[int, str, Path]) -> str:
    """The single ``error:`` line of a run that exited 2 without a traceback."""
    rc, err, _ = result
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    assert "weights_only=False" not in err
    return lines[0]


@pytest.mark.parametrize("case", ["infer_truncated", "evaluate_truncated", "convert_truncated",
                                  "train_init_truncated"])
def test_a_truncated_safetensors_file(results, case):
    line = one_error(results[case])
    assert line.startswith(f"error: {results[case][2] / 'trunc.safetensors'}: not a readable safetensors file, "
                           "truncated or damaged (")


@pytest.mark.parametrize("case", ["train_resume_malicious", "infer_weights_malicious"])
def test_a_malicious_checkpoint_is_refused_naming_the_global(results, case):
    line = one_error(results[case])
    assert line.startswith(f"error: {results[case][2] / 'evil.ckpt'}: refused: the file holds a pickled "
                           "posix.system object")


def test_a_malicious_facexzoo_pickle_is_refused_naming_the_global(results):
    line = one_error(results["infer_face_malicious"])
    assert line == (f"error: {results['infer_face_malicious'][2] / 'evil.pkl'}: refused: the pickle references the "
                    "global 'posix.system', which is not needed to rebuild RetinaFace weights (nothing was run)")


def test_missing_face_weights(results):
    line = one_error(results["infer_face_missing"])
    assert line.startswith("error: checkpoints/facexzoo: no such file or folder; data.face.weights (--face-weights) "
                           "takes FaceX-Zoo's models directory") and "--face-detector haar" in line


def test_official_reading_of_a_havic_file(results):
    assert "this is a havic weights file, not an official HAVIC state dict: drop --official" in \
        one_error(results["infer_official_on_havic"])


def test_untrained_heads_need_a_flag(results):
    line = one_error(results["infer_untrained_heads"])
    assert "untrained.safetensors: its detection heads were never trained" in line
    assert "--allow-untrained-heads" in line


def test_an_empty_folder_is_bad_input(results):
    assert one_error(results["infer_empty_folder"]).startswith("error: nothing to score: no video files in ")


def test_a_missing_path_and_a_text_file_are_failed_rows_and_exit_1(results):
    rc, err, d = results["infer_missing_and_text"]
    assert rc == 1 and "Traceback" not in err, err
    assert [(p.path, p.error) for p in read_predictions(d / "failed.csv")] == [
        (str(d / "missing.mp4"), "not_found"), (str(d / "vids" / "notes.txt"), "unreadable")]


def test_a_folder_takes_every_video_once_and_lists_what_it_skips(results):
    rc, err, d = results["infer_folder"]
    assert rc == 0, err
    rows = read_predictions(d / "folder.csv")
    assert [(p.path, p.error) for p in rows] == [(f"{d}/vids/x.mp4", None), (f"{d}/vids/y.m2ts", None)]
    assert "skipped 1 file(s) whose extension is not a video's (.txt 1): notes.txt" in err
    assert f"{d}/vids/../vids/x.mp4: the same file as {d}/vids/x.mp4; scored once" in err


def test_evaluating_an_empty_split_is_an_error_that_suggests_split_all(results):
    line = one_error(results["evaluate_empty_split"])
    assert line == (f"error: {results['evaluate_empty_split'][2] / 'train_only.csv'}: no videos in split 'test' "
                    "(its splits: train); --split all scores every row")


def test_resuming_with_other_settings_is_refused_naming_them(results):
    line = one_error(results["infer_resume_other_settings"])
    assert line.startswith(f"error: {results['infer_resume_other_settings'][2] / 'done.csv'}: cannot resume: 1 row(s) "
                           "made with infer.hop_s: 0.4 -> 0.8 (before -> now)") and "--resume-mixed" in line
