"""Output folders are all or nothing, bad output paths are refused before any work, and two runs (two
processes) write the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import grukit
from grukit import pipeline
from grukit.artifacts import staged_output
from grukit.cli import DATA_DIR, main as cli

DEMO = [str(DATA_DIR / "demo_model.onnx"), "--calib", str(DATA_DIR / "demo_calib.npz")]


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    for command in (["deploy", *DEMO, "--val", str(DATA_DIR / "demo_val.npz"), "--target", "stm32l476"],
                    ["export", *DEMO]):
        assert cli([*command, "--out", str(tmp_path / "afile" / "out")]) == 2
        err = capsys.readouterr().err
        assert "afile is a file" in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "folder.onnx").mkdir()
    assert cli(["prune", *DEMO, "--ratio", "0.5", "--out", str(tmp_path / "folder.onnx")]) == 2
    assert "folder is in the way" in capsys.readouterr().err


def test_a_failed_run_leaves_the_previous_output_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("kept")

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C in the middle of the run

    monkeypatch.setattr(pipeline, "check_boards", broken)
    with pytest.raises(KeyboardInterrupt):
        pipeline.deploy(DATA_DIR / "demo_model.onnx", DATA_DIR / "demo_calib.npz", DATA_DIR / "demo_val.npz",
                        "stm32l476", out_dir=out, progress=False, observer="minmax")
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder left beside it


def test_a_completed_run_replaces_the_folder(tmp_path):
    out = tmp_path / "out"
    with staged_output(out) as work:
        (work / "a").write_text("1")
    with staged_output(out) as work:
        (work / "b").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_two_deploys_write_the_same_bytes(tmp_path):
    """One run in this process, one in a fresh one (another hash seed, fresh caches and imports)."""
    runs = [tmp_path / "one", tmp_path / "two"]
    assert cli(["demo", "--out", str(runs[0])]) == 0
    proc = subprocess.run([sys.executable, "-m", "grukit.cli", "demo", "--out", str(runs[1])], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no framework's log lines (LiteRT's XNNPACK notice among them)
    files = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(runs[1]) for p in runs[1].rglob("*") if p.is_file())
    for name in files:
        if name.suffix in (".md", ".html"):  # they show the stage timings
            continue
        a, b = (runs[0] / name).read_bytes(), (runs[1] / name).read_bytes()
        if name.name == "report.json":
            a, b = (json.loads(x) for x in (a, b))
            assert a.pop("stages") != [] and b.pop("stages") != []  # timings: their own field
        assert a == b, name
        # Nothing of this machine in them: the demo is named relative to grukit, wherever it is installed.
        assert str(DATA_DIR).encode() not in (runs[0] / name).read_bytes(), name
