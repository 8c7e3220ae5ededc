"""grukit deploy end to end on tiny torch models: scores against torch, report files and their schema."""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import grukit
from grukit import evaluate
from grukit.cli import _finish_deploy
from grukit.core.errors import BadInputError
from grukit.firmware_ref import build
from grukit.firmware_ref.build import emulation_unavailable_reason
from grukit.inputs import infer_task
from grukit.pipeline import deploy
from grukit.report import MISMATCH_UNIT, SCHEMA_VERSION, Report

# torch's float32 GRU vs the NumPy float reference: different summation order.
FLOAT_MSE_RTOL = 1e-4

# The drop is computed from the same two NumPy outputs in the test and the pipeline; only summation order of
# the mean may differ.
DROP_RTOL = 1e-9

SCHEMA_KEYS = {"schema_version", "model", "task", "metric", "scores", "bit_exact", "artifacts", "targets", "pass",
               "drop", "confusion", "drift", "saturation", "stages", "not_available", "runtimes", "latency",
               "bit_exact_detail", "baseline"}
RUNTIMES = {"framework", "onnxruntime", "numpy-float", "numpy-int8", "litert", "onnxruntime-qdq", "tflite-micro",
            "c-kernel"}


class Tiny(nn.Module):
    def __init__(self, I=3, H=6, O=3):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc = nn.Linear(H, O)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


class BiTiny(nn.Module):
    def __init__(self, I=3, H=4, O=2):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, O)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 8, 3)).astype(np.float32)
    module = Tiny()
    with torch.no_grad():
        logits = module(torch.from_numpy(x)).numpy()
    # Labels: the module's own argmax, flipped on every third sample, so float accuracy is known (2/3 or so).
    y = logits.argmax(1)
    y[::3] = (y[::3] + 1) % 3
    return module, x, y.astype(np.int64), logits


def _torch_accuracy(logits, y):
    return float(np.mean(logits.argmax(1) == y))


def test_deploy_writes_the_three_reports(tiny, tmp_path):
    module, x, y, logits = tiny
    report = deploy(module, x[:16], (x, y), "stm32l476", out_dir=tmp_path, progress=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert SCHEMA_KEYS <= set(doc) and doc["schema_version"] == SCHEMA_VERSION
    assert doc["task"] == "classification" and doc["metric"] == "accuracy"
    assert doc["model"] == {"layers": 1, "input_size": 3, "hidden_size": [6], "params": 3 * 6 * 9 + 6 * 6 + 3 * 6 + 3,
                            "macs_per_step": 3 * 6 * 9 + 3 * 6, "output_size": 3, "per_step": False,
                            "bidirectional": False,
                            "head": {"reads": "last_step", "layers": [{"in": 6, "out": 3, "activation": "linear"}]}}
    assert doc["scores"]["numpy-float"] == _torch_accuracy(logits, y)
    assert doc["scores"]["framework"] == _torch_accuracy(logits, y)  # torch itself ran the module
    assert set(doc["scores"]) == RUNTIMES
    assert all(doc["runtimes"][r]["sequences"] == len(x) for r in RUNTIMES)  # 48 x 8 steps: all of them
    assert doc["bit_exact"] == {"tflite-micro": True, "c-kernel": True}, doc["bit_exact_detail"]
    # The QDQ file's agreement as a user running it with default session options sees it, stated in LSB.
    qdq = doc["runtimes"]["onnxruntime-qdq"]
    assert "default session options" in qdq["what"] and re.search(r"= \d+ LSB in y, \d+ LSB in the states", qdq["note"])
    assert doc["pass"] == report.passed and report.exit_code == (0 if report.passed else 1)
    assert [t["name"] for t in doc["targets"]] == [
        "stm32l476 flash", "stm32l476 RAM", "stm32l476 latency per step", "stm32l476 latency per sequence",
        "tflite-micro bit-exact", "c-kernel bit-exact", "accuracy drop (numpy-int8 vs numpy-float)"]
    targets = {t["name"]: t for t in doc["targets"]}
    for runtime in ("tflite-micro", "c-kernel"):
        check = targets[f"{runtime} bit-exact"]
        assert (check["limit"], check["value"], check["pass"], check["unit"]) == (0, 0, True, MISMATCH_UNIT), check
    # Without --max-latency-ms both latency lines are reported, not checked.
    for name in ("stm32l476 latency per step", "stm32l476 latency per sequence"):
        assert targets[name]["limit"] is None and targets[name]["pass"] is None
    if build.missing_tools() == []:  # flash measured: the int8 kernel alone, linked from its entry points
        assert "grukit_model_s8_step" in targets["stm32l476 flash"]["note"]
        assert "_s16" not in targets["stm32l476 flash"]["note"]
    for name, size in doc["artifacts"].items():
        assert (tmp_path / name).stat().st_size == size
    for name in ("model.onnx", "model_step.onnx", "model_int8_qdq.onnx", "model_int8_step.tflite",
                 "model_int8_seq_T8.tflite", "model_float_step.tflite", "model_float_seq_T8.tflite",
                 "grukit_model/src/grukit_model.c", "grukit_model/src/grukit_model.h", "grukit_model/CMakeLists.txt"):
        assert name in doc["artifacts"], f"{name} not exported"
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page  # the confusion matrix at least
    for ref in ("src='http", 'src="http', "href='http", 'href="http', "url(http"):
        assert ref not in page, f"report.html holds a network reference {ref!r}"
    assert "# grukit deploy" in (tmp_path / "report.md").read_text()


def test_bidirectional_model_says_why_there_is_no_integer_model(tmp_path):
    torch.manual_seed(2)
    module = BiTiny()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 5, 3)).astype(np.float32)
    with torch.no_grad():
        logits = module(torch.from_numpy(x)).numpy()
    y = logits.argmax(1).astype(np.int64)
    report = deploy(module, x, (x, y), "stm32l476", out_dir=tmp_path, progress=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["scores"]["numpy-float"] == 1.0 and doc["scores"]["onnxruntime"] == 1.0
    assert "numpy-int8" not in doc["scores"] and doc["bit_exact"] == {}
    assert "bidirectional" in doc["not_available"]["integer model, TFLite and C"]
    assert not any(name.endswith((".tflite", ".c")) for name in doc["artifacts"])
    drop_check = doc["targets"][-1]
    assert drop_check["value"] is None and drop_check["pass"] is None
    assert not doc["pass"] and report.exit_code == 1  # an unchecked limit is not a pass
    assert "bidirectional" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("limit_factor, passes", [(10.0, True), (0.0, False)])
def test_drop_check_against_the_limit(tmp_path, limit_factor, passes):
    # Regression on the module's own outputs: float MSE is ~0, so the integer runtime's MSE is the drop and is
    # certainly positive; a limit of 0 must fail, ten times the drop must pass.
    torch.manual_seed(3)
    module = Tiny(O=2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 6, 3)).astype(np.float32)
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy()
    model = grukit.load(module)
    float_mse = float(np.mean((model.predict(x).astype(np.float64) - y) ** 2))
    int_mse = float(np.mean((grukit.quantize(model, x, scheme="int8").predict(x).astype(np.float64) - y) ** 2))
    expected_drop = int_mse - float_mse
    assert expected_drop > 0
    report = deploy(module, x, (x, y), "stm32l476", max_drop=limit_factor * expected_drop, out_dir=tmp_path,
                    progress=False)
    drop_check = report.targets[-1]
    assert drop_check["name"] == "mse drop (numpy-int8 vs numpy-float)"
    assert drop_check["value"] == pytest.approx(expected_drop, rel=DROP_RTOL)
    assert drop_check["pass"] is passes and report.passed is passes
    if not passes:
        assert any("mse drop" in line and "exceeds the limit" in line for line in report.failures())


def test_interpreters_see_a_documented_subset(tiny, tmp_path, monkeypatch):
    module, x, y, logits = tiny
    monkeypatch.setattr(evaluate, "INTERPRETER_MAX_STEPS", 10 * 8)  # 10 sequences of T=8
    report = deploy(module, x[:16], (x, y), "stm32l476", out_dir=tmp_path, progress=False)
    for runtime in ("litert", "tflite-micro"):
        info = report.runtimes[runtime]
        assert (info["sequences"], info["of"]) == (10, 48) and "first 10 of 48" in info["note"]
        assert info["baseline"] == _torch_accuracy(logits[:10], y[:10])  # drop against float on the same 10
    for runtime in ("numpy-float", "numpy-int8", "onnxruntime-qdq", "c-kernel"):
        assert report.runtimes[runtime]["sequences"] == 48
    assert "10 sequences" in report.bit_exact_detail["tflite-micro"]


class TimeMajor(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 6)  # time-major input [T, N, I]
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[-1])


def test_pt2_framework_runs_in_torch_with_its_fixed_batch(tmp_path):
    # A torch.export program fixes its batch (4 here): 10 sequences run as 3 chunks, the last one padded.
    torch.manual_seed(4)
    module = TimeMajor().eval()
    x = np.random.default_rng(4).standard_normal((10, 7, 3)).astype(np.float32)
    as_time_major = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(1, 0, 2)))
    with torch.no_grad():
        logits = module(as_time_major(x)).numpy()
    y = logits.argmax(1)
    y[::3] = 1 - y[::3]
    torch.export.save(torch.export.export(module, (as_time_major(x[:4]),)), str(tmp_path / "m.pt2"))
    report = deploy(tmp_path / "m.pt2", x, (x, y), "stm32l476", out_dir=tmp_path / "out", progress=False)
    assert "torch.export" in report.runtimes["framework"]["what"]
    assert report.scores["framework"] == report.scores["numpy-float"] == _torch_accuracy(logits, y)


def test_latency_limit_failure_says_by_how_much(tiny, tmp_path):
    module, x, y, _ = tiny
    boards = ["stm32l476", "rp2040", "esp32c3", "esp32s3"]
    report = deploy(module, x[:16], (x, y), boards, max_latency_ms=1e-6, out_dir=tmp_path, progress=False)
    lines = [line for line in report.failures() if "latency" in line]
    assert len(lines) == len(boards) and all("exceeds the limit" in line for line in lines)
    assert report.exit_code == 1
    # The Cortex-M4, M0+ and RV32 boards' instructions are counted in QEMU (mps2-an386, microbit, virt) where
    # the tools are installed; the ESP32-S3's Xtensa has no QEMU machine here, so its count comes from the
    # cost model, labelled as such.
    for board, machine in (("stm32l476", "mps2-an386"), ("rp2040", "microbit"), ("esp32c3", "virt")):
        assert report.latency[board]["measured"] is (emulation_unavailable_reason(machine) is None), board
        assert machine in report.latency[board]["source"] or not report.latency[board]["measured"]
    assert report.latency["esp32s3"]["measured"] is False
    assert "cost model" in report.latency["esp32s3"]["source"]
    assert "no QEMU machine" in report.latency["esp32s3"]["source"]
    # Flash: each board's own core's build where a machine builds for it, the M4 build as an estimate elsewhere.
    flash = {t["name"].split()[0]: t for t in report.targets if t["name"].endswith(" flash")}
    for board, machine in (("stm32l476", "mps2-an386"), ("rp2040", "microbit"), ("esp32c3", "virt")):
        if emulation_unavailable_reason(machine) is None:
            core = build.MACHINES[machine].cpu
            assert flash[board]["estimate"] is False and f"-O2 {core} build" in flash[board]["note"], board
    if emulation_unavailable_reason("mps2-an386") is None:
        assert flash["esp32s3"]["estimate"] is True and "an estimate for xtensa-lx7" in flash["esp32s3"]["note"]
    if emulation_unavailable_reason("microbit") is None:
        assert flash["rp2040"]["value"] != flash["stm32l476"]["value"]  # Armv6-M code is not the M4's


def test_regression_scores_mse_and_mae(tmp_path):
    torch.manual_seed(1)
    module = Tiny(O=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 6, 3)).astype(np.float32)
    y = rng.standard_normal((20, 2)).astype(np.float32)
    with torch.no_grad():
        out = module(torch.from_numpy(x)).numpy().astype(np.float64)
    report = deploy(module, x, (x, y), "nrf52840", out_dir=tmp_path, progress=False)
    assert report.task == "regression" and report.metric == "mse"
    assert report.scores["numpy-float"] == pytest.approx(np.mean((out - y) ** 2), rel=FLOAT_MSE_RTOL)
    assert report.extra_scores["mae"]["numpy-float"] == pytest.approx(np.mean(np.abs(out - y)), rel=FLOAT_MSE_RTOL)
    # No --max-drop: the default budget, a rise of 25% of float's MSE.
    line = next(t for t in report.targets if t["name"].startswith("mse drop"))
    assert line["limit"] == pytest.approx(0.25 * report.scores["numpy-float"]) and report.max_drop_relative == 0.25


@pytest.mark.parametrize(
    "y, task",
    [
        (np.zeros(5, np.int64), "classification"),        # one label per sequence
        (np.zeros((5, 7), np.int32), "classification"),   # one label per step
        (np.zeros((5, 2), np.float32), "regression"),     # one target vector per sequence
        (np.zeros((5, 7, 2), np.float64), "regression"),  # one target vector per step
    ],
)
def test_task_inferred_from_labels(y, task):
    assert infer_task(y) == task


def test_task_override_and_refusals():
    assert infer_task(np.zeros(5, np.int64), "regression") == "regression"
    with pytest.raises(BadInputError, match="cannot tell the task"):
        infer_task(np.zeros(5, np.float32))
    with pytest.raises(BadInputError, match="unknown task"):
        infer_task(np.zeros(5, np.int64), "ranking")


def test_bad_inputs_are_named(tiny, tmp_path):
    module, x, y, _ = tiny
    np.savez(tmp_path / "val_no_y.npz", x=x)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    cases = [
        (dict(calib=tmp_path / "missing.npz", val=(x, y)), "missing.npz: no such file"),
        (dict(calib=x, val=tmp_path / "val_no_y.npz"), "no array 'y'"),
        (dict(calib=tmp_path / "garbage.npz", val=(x, y)), "not a readable .npz"),
        (dict(calib=x[:, :, :2], val=(x, y)), r"shape \[N, T, 3\]"),
        (dict(calib=x, val=(x, y + 3)), r"labels must be in \[0, 2\]"),
        (dict(calib=x, val=(x, y), target="no-such-board"), "unknown target"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("target", "stm32l476")
        with pytest.raises(BadInputError, match=message):
            deploy(module, out_dir=tmp_path / "out", progress=False, **kwargs)


# --- bit-exactness is a check: a disagreeing TFLite-Micro or C kernel fails the deploy -------------------


def _perturbed(array: np.ndarray, index: tuple) -> np.ndarray:
    """A copy with one element moved by one LSB (down at the type's maximum, so it stays representable)."""
    out = np.array(array, copy=True)
    out[index] += -1 if out[index] == np.iinfo(out.dtype).max else 1
    return out


def _tflm_off_by_one(monkeypatch):
    real = evaluate.run_tflm_sequence
    monkeypatch.setattr(evaluate, "run_tflm_sequence", lambda path, x_q: _perturbed(real(path, x_q), (0, 1)))


def _c_kernel_off_by_one(monkeypatch):
    real = evaluate.run_c_host

    def run(qmodel, x_q, **form):
        y, states = real(qmodel, x_q, **form)
        return y, [_perturbed(states[0], (2, 3, 4)), *states[1:]]

    monkeypatch.setattr(evaluate, "run_c_host", run)


@pytest.mark.parametrize("runtime, perturb, first", [
    ("tflite-micro", _tflm_off_by_one, "model_int8_seq_T8.tflite y: 1 of 144 differ; first at (0, 1)"),  # y [48, 3]
    ("c-kernel", _c_kernel_off_by_one, "h0: 1 of 2304 differ; first at (2, 3, 4)"),  # h [48, 8, 6]
])
def test_a_runtime_that_is_not_bit_exact_fails_the_deploy(tiny, tmp_path, monkeypatch, capsys, runtime, perturb, first):
    module, x, y, _ = tiny
    if runtime == "c-kernel" and build.host_cc() is None:
        pytest.skip("no host C compiler: the C kernel is not run")
    perturb(monkeypatch)
    # max_drop 1.0: the accuracy check passes whatever the perturbation, so only bit-exactness can fail.
    report = deploy(module, x[:16], (x, y), "stm32l476", max_drop=1.0, out_dir=tmp_path, progress=False)
    check = next(t for t in report.targets if t["name"] == f"{runtime} bit-exact")
    assert (check["pass"], check["value"], check["limit"]) == (False, 1, 0), check
    assert first in check["note"]
    others = [t for t in report.checks() if t is not check]
    assert all(t["pass"] is True for t in others), others
    assert not report.passed and report.exit_code == 1
    assert _finish_deploy(report, tmp_path) == 1
    out = capsys.readouterr().out
    assert "grukit deploy: FAIL" in out and f"FAILED {runtime} bit-exact" in out and first in out
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["pass"] is False and doc["bit_exact"][runtime] is False


def test_lines_without_a_limit_are_reported_not_checked():
    line = lambda name, limit, value, passed: {"name": name, "limit": limit, "value": value, "unit": "ms",
                                               "pass": passed, "estimate": True, "note": ""}
    report = Report(source="s", scheme="int8", model={}, task="regression", metric="mse", higher_is_better=False)
    report.targets = [line("latency per step", None, 5.0, None), line("flash", 10, 3, True)]
    assert report.passed and report.exit_code == 0 and report.failures() == []
    report.targets.append(line("latency per sequence", 1.0, None, None))  # a limit it could not evaluate
    assert not report.passed and report.exit_code == 1
    assert report.failures() == ["latency per sequence: could not be checked (not available)"]


def test_quantization_adjustments_reach_the_report(tiny, tmp_path):
    # A unit with ~0 input weights and a bias of 2: int8 widens that channel's weight scale (its bias would
    # not fit the int32 accumulator otherwise) and the report must say so.
    module, x, y, _ = tiny
    with torch.no_grad():
        module.gru.weight_ih_l0[2 * 6 + 1].fill_(1e-7)  # gate n (PyTorch order r, z, n), unit 1
        module.gru.bias_ih_l0[2 * 6 + 1] = 2.0
    report = deploy(module, x, (x, y), "stm32l476", out_dir=tmp_path, progress=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert any("gx_n channel 1" in note for note in doc["quantization_notes"]), doc["quantization_notes"]
    assert "Quantization adjustments" in (tmp_path / "report.md").read_text()
    assert "Quantization adjustments" in (tmp_path / "report.html").read_text()
    assert report.quantization_notes == doc["quantization_notes"]


def test_a_model_that_does_not_fit_gets_a_report_saying_by_how_much(tmp_path):
    """A board with far too little flash for the demo: the run completes, and flash fails saying by how much."""
    from grukit.cli import DATA_DIR
    from grukit.runtime.targets import TARGETS_DIR

    text = re.sub(r"(?m)^flash_bytes = .*$", "flash_bytes = 4096", (TARGETS_DIR / "stm32l476.toml").read_text())
    (tmp_path / "tiny.toml").write_text(text)
    report = deploy(DATA_DIR / "demo_model.onnx", DATA_DIR / "demo_calib.npz", DATA_DIR / "demo_val.npz",
                    tmp_path / "tiny.toml", out_dir=tmp_path / "out", progress=False, observer="minmax")
    assert report.exit_code == 1
    (check,) = [t for t in report.targets if t["name"].endswith(" flash")]
    assert check["pass"] is False and check["value"] > 4096
    assert any(f"flash: {check['value']:,} B exceeds the limit 4,096 B by {check['value'] - 4096:,} B" in line
               for line in report.failures()), report.failures()
