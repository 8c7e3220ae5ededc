"""The grukit command line: exit codes, one-line errors, inspect output, the demo."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from grukit.cli import DATA_DIR, main
from grukit.runtime.targets import list_targets

# The same float network through two ONNX graphs (both GRU nodes): summation order only.
ONNX_FLOAT_ATOL = 1e-4


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("inspect", "export", "deploy", "demo", "targets"):
        assert command in out


def test_no_command_is_exit_2(capsys):
    assert main([]) == 2


def test_targets_lists_every_board(capsys):
    code, out, _ = _run(capsys, "targets")
    assert code == 0 and [line.split()[0] for line in out.strip().splitlines()] == list_targets()


def test_inspect_demo_model(capsys):
    info = json.loads((DATA_DIR / "demo.json").read_text())
    I, H, O = info["data"]["I"], info["model"]["hidden_size"], len(info["data"]["classes"])
    # nn.GRU + nn.Linear parameter count, written from the torch layer definitions.
    params = 3 * H * I + 3 * H * H + 2 * 3 * H + O * H + O
    code, out, _ = _run(capsys, "inspect", str(DATA_DIR / "demo_model.onnx"))
    assert code == 0
    assert f"input {I} -> hidden {H}" in out and f"parameters: {params:,}" in out
    assert f"MACs per step: {3 * H * (I + H) + O * H:,}" in out


def test_missing_model_file_is_exit_2(capsys, tmp_path):
    code, _, err = _run(capsys, "deploy", str(tmp_path / "nope.onnx"), "--calib", "c.npz", "--val", "v.npz",
                        "--target", "stm32l476")
    assert code == 2 and "nope.onnx: no such file" in err
    _one_line_error(err)


def test_bad_npz_is_exit_2(capsys, tmp_path):
    (tmp_path / "calib.npz").write_bytes(b"\x00 definitely not a zip")
    code, _, err = _run(capsys, "deploy", str(DATA_DIR / "demo_model.onnx"), "--calib", str(tmp_path / "calib.npz"),
                        "--val", str(DATA_DIR / "demo_val.npz"), "--target", "stm32l476", "--out", str(tmp_path / "o"))
    assert code == 2 and "not a readable .npz" in err
    _one_line_error(err)


def test_unknown_target_is_exit_2(capsys, tmp_path):
    code, _, err = _run(capsys, "deploy", str(DATA_DIR / "demo_model.onnx"), "--calib", str(DATA_DIR / "demo_calib.npz"),
                        "--val", str(DATA_DIR / "demo_val.npz"), "--target", "esp8266", "--out", str(tmp_path))
    assert code == 2 and "unknown target 'esp8266'" in err and "stm32l476" in err
    _one_line_error(err)


def test_debug_shows_the_traceback(tmp_path):
    from grukit.core.errors import BadInputError

    with pytest.raises(BadInputError):
        main(["deploy", str(tmp_path / "nope.onnx"), "--calib", "c", "--val", "v", "--target", "x", "--debug"])


def test_console_process_exit_code_and_stderr(tmp_path):
    # The real process: exit status 2 and one line, no traceback.
    proc = subprocess.run([sys.executable, "-m", "grukit.cli", "inspect", str(tmp_path / "missing.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    _one_line_error(proc.stderr)


def test_demo_exit_code_matches_its_report(capsys, tmp_path):
    code, out, _ = _run(capsys, "demo", "--out", str(tmp_path))
    doc = json.loads((tmp_path / "report.json").read_text())
    assert code == (0 if doc["pass"] else 1)
    assert ("PASS" if doc["pass"] else "FAIL") in out
    info = json.loads((DATA_DIR / "demo.json").read_text())
    assert doc["scores"]["numpy-float"] == pytest.approx(info["model"]["float_val_accuracy"], abs=1.5 / 320)
    assert doc["targets"][0]["name"] == "stm32l476 flash"
    # The demo runs every runtime on the whole validation set and the integer ones agree bit for bit.
    assert all(r["sequences"] == r["of"] == 320 for r in doc["runtimes"].values())
    assert doc["bit_exact"] == {"tflite-micro": True, "c-kernel": True}
    # The shipped demo passes: every check, bit-exactness included.
    assert code == 0 and doc["pass"] is True and "grukit deploy: PASS" in out, doc["targets"]
    checks = {t["name"]: t for t in doc["targets"]}
    for runtime in ("tflite-micro", "c-kernel"):
        assert (checks[f"{runtime} bit-exact"]["pass"], checks[f"{runtime} bit-exact"]["value"]) == (True, 0)


def test_export_writes_onnx(capsys, tmp_path):
    import onnxruntime as ort

    code, out, _ = _run(capsys, "export", str(DATA_DIR / "demo_model.onnx"), "--out", str(tmp_path))
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model_float_step.tflite", "model_step.onnx"]
    x = np.load(DATA_DIR / "demo_val.npz")["x"][:8]
    def run(path):
        session = ort.InferenceSession(str(path))
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    np.testing.assert_allclose(run(tmp_path / "model.onnx"), run(DATA_DIR / "demo_model.onnx"), atol=ONNX_FLOAT_ATOL, rtol=0)


def test_export_quantized_prints_every_file_and_its_size(capsys, tmp_path):
    code, out, _ = _run(capsys, "export", str(DATA_DIR / "demo_model.onnx"), "--out", str(tmp_path),
                        "--calib", str(DATA_DIR / "demo_calib.npz"), "--scheme", "16x8", "--c")
    assert code == 0
    # The order grukit deploy writes them in (grukit.artifacts): the same files under the same names.
    expected = ["model.onnx", "model_step.onnx", "model_16x8_qdq.onnx", "model_float_step.tflite",
                "model_float_seq_T50.tflite", "model_16x8_step.tflite", "model_16x8_seq_T50.tflite",
                "grukit_model/src/grukit_model.h", "grukit_model/src/grukit_model.c", "grukit_model/examples/main.c",
                "grukit_model/src/grukit_gru.h", "grukit_model/src/grukit_gru.c", "grukit_model/src/grukit_tables.h",
                "grukit_model/src/grukit_tables.c", "grukit_model/CMakeLists.txt",
                "grukit_model/cmake/arm-none-eabi.cmake", "grukit_model/README.md", "grukit_model/library.json",
                "grukit_model/library.properties"]
    table = {line.split()[0]: line.split()[1] for line in out.strip().splitlines()[1:-1]}
    assert list(table) == expected
    for name, size in table.items():
        assert int(size.replace(",", "")) == (tmp_path / name).stat().st_size


def test_inspect_tflite_agrees_with_the_source_model(capsys, tmp_path):
    _run(capsys, "export", str(DATA_DIR / "demo_model.onnx"), "--out", str(tmp_path),
         "--calib", str(DATA_DIR / "demo_calib.npz"))
    _, source, _ = _run(capsys, "inspect", str(DATA_DIR / "demo_model.onnx"))
    code, out, _ = _run(capsys, "inspect", str(tmp_path / "model_int8_step.tflite"))
    assert code == 0 and "scheme: int8" in out and "step model" in out and "linear_before_reset=1" in out
    # Counted from the file's metadata and output shape, against the count from the loaded ONNX model.
    for key in ("parameters:", "MACs per step:"):
        assert [line for line in out.splitlines() if key in line] == \
            [line for line in source.splitlines() if key in line]


def test_inspect_foreign_tflite_is_exit_2(capsys, tmp_path):
    (tmp_path / "other.tflite").write_bytes(b"\x00" * 64)
    code, _, err = _run(capsys, "inspect", str(tmp_path / "other.tflite"))
    assert code == 2 and "TFL3" in err
    _one_line_error(err)


def test_export_c_without_calib_is_exit_2(capsys, tmp_path):
    code, _, err = _run(capsys, "export", str(DATA_DIR / "demo_model.onnx"), "--out", str(tmp_path), "--c")
    assert code == 2 and "--calib" in err


def test_export_bidirectional_with_calib_writes_the_float_exports(capsys, tmp_path):

    class BiGRU(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)
            self.fc = torch.nn.Linear(8, 2)

        def forward(self, x):
            out, _ = self.gru(x)
            return self.fc(out[:, -1])

    torch.manual_seed(5)
    x = np.random.default_rng(5).standard_normal((6, 5, 3)).astype(np.float32)
    module = BiGRU().eval()
    torch.onnx.export(module, (torch.from_numpy(x[:1]),), str(tmp_path / "bi.onnx"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
    np.savez(tmp_path / "calib.npz", x=x)
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, "export", str(tmp_path / "bi.onnx"), "--out", str(out_dir),
                          "--calib", str(tmp_path / "calib.npz"), "--c")
    assert code == 0, err
    assert "no integer exports" in err and "--calib and --c not used" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.onnx"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(out_dir / "model.onnx"))
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected,
                               atol=ONNX_FLOAT_ATOL, rtol=0)
