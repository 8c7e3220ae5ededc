"""grukit deploy end to end on tiny torch models: scores against torch, report files and their schema."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from grukit import pipeline
from grukit.errors import BadInputError
from grukit.pipeline import deploy, infer_task
from grukit.report import NOT_AVAILABLE, SCHEMA_VERSION

# torch's float32 GRU vs the NumPy float reference: different summation order.
FLOAT_MSE_RTOL = 1e-4

SCHEMA_KEYS = {"schema_version", "model", "task", "metric", "scores", "bit_exact", "artifacts", "targets", "pass",
               "drop", "confusion", "drift", "saturation", "stages", "not_available"}


class Tiny(nn.Module):
    def __init__(self, I=3, H=6, O=3):
        super().__init__()
        self.gru = nn.GRU(I, H, batch_first=True)
        self.fc = nn.Linear(H, O)

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


@pytest.fixture
def registry():
    yield pipeline
    for name in pipeline.CAPABILITIES:
        pipeline.unregister(name)


def _torch_accuracy(logits, y):
    return float(np.mean(logits.argmax(1) == y))


def test_deploy_writes_the_three_reports(tiny, tmp_path):
    module, x, y, logits = tiny
    report = deploy(module, x[:16], (x, y), "stm32l476", out_dir=tmp_path, progress=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert SCHEMA_KEYS <= set(doc) and doc["schema_version"] == SCHEMA_VERSION
    assert doc["task"] == "classification" and doc["metric"] == "accuracy"
    assert doc["model"] == {"layers": 1, "input_size": 3, "hidden_size": [6], "params": 3 * 6 * 9 + 6 * 6 + 3 * 6 + 3,
                            "macs_per_step": 3 * 6 * 9 + 3 * 6, "output_size": 3, "per_step": False}
    assert doc["scores"]["float"] == _torch_accuracy(logits, y)
    assert doc["pass"] == report.passed and report.exit_code == (0 if report.passed else 1)
    assert [t["name"] for t in doc["targets"]][:3] == ["stm32l476 flash", "stm32l476 RAM", "stm32l476 latency"]
    for name, size in doc["artifacts"].items():
        assert (tmp_path / name).stat().st_size == size
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page  # the confusion matrix at least
    for ref in ("src='http", 'src="http', "href='http", 'href="http', "url(http"):
        assert ref not in page, f"report.html holds a network reference {ref!r}"
    assert "# grukit deploy" in (tmp_path / "report.md").read_text()


def test_missing_quantizer_is_reported_never_faked(tiny, tmp_path, registry):
    module, x, y, _ = tiny
    registry.register("quantize", None)
    report = deploy(module, x[:16], (x, y), "stm32l476", out_dir=tmp_path, progress=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["scores"]["int8"] is None and doc["drop"]["int8"] is None
    assert "quantize" in doc["not_available"]
    drop_check = doc["targets"][-1]
    assert drop_check["value"] is None and drop_check["pass"] is None
    assert not doc["pass"] and report.exit_code == 1  # an unchecked limit is not a pass
    assert NOT_AVAILABLE in (tmp_path / "report.md").read_text()
    assert NOT_AVAILABLE in (tmp_path / "report.html").read_text()


class HalfRight:
    """Stand-in for a quantized model: right on the first half of the labels, wrong on the rest."""

    def __init__(self, y, classes):
        self.y, self.classes = y, classes

    def predict(self, x):
        label = self.y.copy()
        label[len(label) // 2 :] = (label[len(label) // 2 :] + 1) % self.classes
        return np.eye(self.classes, dtype=np.float32)[label]


@pytest.mark.parametrize("max_drop, passes", [(0.5, True), (0.01, False)])
def test_drop_check_against_the_limit(tiny, tmp_path, registry, max_drop, passes):
    module, x, y, logits = tiny
    registry.register("quantize", lambda model, calib_x, scheme, **kw: HalfRight(y, 3))
    report = deploy(module, x[:16], (x, y), "stm32l476", max_drop=max_drop, out_dir=tmp_path, progress=False)
    expected_drop = _torch_accuracy(logits, y) - 0.5
    drop_check = report.targets[-1]
    assert drop_check["value"] == pytest.approx(expected_drop, abs=1e-12)
    assert drop_check["pass"] is passes and report.passed is passes
    if not passes:
        assert any("accuracy drop" in line and "exceeds the limit" in line for line in report.failures())
    cm = np.array(report.confusion["int8"])
    assert cm.sum() == len(y) and np.trace(cm) == len(y) // 2


def test_latency_limit_failure_says_by_how_much(tiny, tmp_path):
    module, x, y, _ = tiny
    report = deploy(module, x[:16], (x, y), ["stm32l476", "stm32h743"], max_latency_ms=1e-6, out_dir=tmp_path,
                    progress=False)
    lines = [line for line in report.failures() if "latency" in line]
    assert len(lines) == 2 and all("exceeds the limit" in line for line in lines)
    assert report.exit_code == 1


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
    assert report.scores["float"] == pytest.approx(np.mean((out - y) ** 2), rel=FLOAT_MSE_RTOL)
    assert report.extra_scores["mae"]["float"] == pytest.approx(np.mean(np.abs(out - y)), rel=FLOAT_MSE_RTOL)
    assert not any(t["name"].startswith("mse drop") for t in report.targets)  # no --max-drop, no check


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
