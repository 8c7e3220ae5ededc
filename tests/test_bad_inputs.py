"""Broken input through every command: one line naming the file and the problem, exit 2, no traceback, no
third-party log noise, nothing left behind, and no work started (issue 16).

Each case runs the real CLI entry point in this process with its file descriptors captured (capfd), so a
warning a framework writes from C++ or through Python's logging shows up as a failure like any other line.
The expensive steps (calibration and quantization, exports, evaluation) are replaced by a tripwire: bad
input must be refused before any of them runs.
"""

from __future__ import annotations

import importlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import grukit
from grukit import artifacts, pipeline
from grukit.cli import DATA_DIR, main as cli
from grukit.core.model import Dense, GRUDirection, GRULayer, GRUModel, Head
from grukit.runtime.targets import TARGETS_DIR
from grukit.export.onnx_export import export_onnx_sequence
from grukit.export.tflite_export import export_tflite_step
from grukit.export.tflite_writer import GRUKIT_METADATA_NAME

import keras_models

prune_module = importlib.import_module("grukit.quantize.prune")

DEMO_ONNX = DATA_DIR / "demo_model.onnx"
DEMO_CALIB = DATA_DIR / "demo_calib.npz"
DEMO_VAL = DATA_DIR / "demo_val.npz"
BOARD = "stm32l476"
MARKER = "pwned.txt"  # what a crafted file's code would write, if grukit ran it


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # {f} is the folder of broken files, {out} the output path
    expect: tuple[str, ...]  # fragments of the one error line: the file it names and the problem


def deploy(model=str(DEMO_ONNX), calib=str(DEMO_CALIB), val=str(DEMO_VAL), target=BOARD, *more):
    return ("deploy", model, "--calib", calib, "--val", val, "--target", target, "--out", "{out}", *more)


def export(model=str(DEMO_ONNX), *more):
    return ("export", model, "--calib", str(DEMO_CALIB), "--c", "--out", "{out}", *more)


def prune(model=str(DEMO_ONNX), calib=str(DEMO_CALIB), *more):
    return ("prune", model, "--calib", calib, "--out", "{out}.onnx", *(more or ("--ratio", "0.5")))


CASES = [
    # models that cannot be read
    Case("truncated-onnx", deploy("{f}/truncated.onnx"), ("truncated.onnx", "cannot read ONNX")),
    Case("empty-onnx", export("{f}/empty.onnx"), ("empty.onnx", "0 inputs")),
    Case("garbage-onnx-inspect", ("inspect", "{f}/garbage.onnx"), ("garbage.onnx", "cannot read ONNX")),
    Case("truncated-pt2", deploy("{f}/truncated.pt2"), ("truncated.pt2", "cannot read a torch.export program")),
    Case("corrupt-pt2-inspect", ("inspect", "{f}/corrupt.pt2"), ("corrupt.pt2", "cannot read a torch.export")),
    Case("truncated-keras", export("{f}/truncated.keras"), ("truncated.keras", "not a Keras 3 .keras archive")),
    Case("keras-without-config", prune("{f}/noconfig.keras"), ("noconfig.keras", "no item named 'config.json'")),
    Case("truncated-tflite-inspect", ("inspect", "{f}/truncated.tflite"), ("truncated.tflite", "truncated or corrupt")),
    Case("foreign-tflite-inspect", ("inspect", "{f}/foreign.tflite"), ("foreign.tflite", "no 'grukit' metadata")),
    Case("unknown-format", deploy("{f}/model.h5"), ("model.h5", "unknown model format '.h5'")),
    Case("folder-as-model", ("inspect", "{f}/folder.onnx"), ("folder.onnx", "not a file")),
    # models grukit does not support, or whose numbers are broken
    Case("unsupported-op", deploy("{f}/sin_front.onnx"), ("sin_front.onnx", "Sin")),
    Case("unsupported-attribute", export("{f}/clipped.onnx"), ("clipped.onnx", "clip")),
    Case("keras-lambda", deploy("{f}/lambda.keras"), ("lambda.keras", "Lambda")),
    Case("nan-weights", deploy("{f}/nan_weights.onnx"), ("nan_weights.onnx", "not finite")),
    # crafted files: code, links and sizes that would reach outside
    Case("onnx-external-data-outside", ("inspect", "{f}/sub/outside.onnx"), ("outside.onnx", "points outside")),
    Case("pt2-pickled-code", ("inspect", "{f}/pickled_code.pt2"), ("pickled_code.pt2", "cannot read a torch.export")),
    Case("keras-zip-slip", export("{f}/zip_slip.keras"), ("zip_slip.keras", "'../../" + MARKER + "'")),
    Case("keras-zip-bomb", ("inspect", "{f}/bomb.keras"), ("bomb.keras", "refused before unpacking")),
    Case("keras-hdf5-external-link", deploy("{f}/h5_link.keras"), ("h5_link.keras", "external link")),
    Case("npz-zip-bomb", deploy(calib="{f}/bomb.npz"), ("bomb.npz", "refused before unpacking")),
    # data that does not fit the model
    Case("truncated-npz", deploy(calib="{f}/truncated.npz"), ("truncated.npz", "not a readable .npz")),
    Case("npz-without-x", prune(calib="{f}/no_x.npz"), ("no_x.npz", "no array 'x'")),
    Case("calib-wrong-features", deploy(calib="{f}/features5.npz"), ("features5.npz", "x must have shape [N, T, 3]")),
    Case("calib-empty", ("export", str(DEMO_ONNX), "--calib", "{f}/empty.npz", "--out", "{out}"),
         ("empty.npz", "N, T > 0")),
    Case("calib-nan", prune(calib="{f}/nan.npz"), ("nan.npz", "finite")),
    Case("val-inf", deploy(val="{f}/val_inf.npz"), ("val_inf.npz", "finite")),
    Case("val-pickled-objects", deploy(val="{f}/objects.npz"), ("objects.npz", "not a readable .npz")),
    Case("labels-beyond-the-head", deploy(val="{f}/labels9.npz"), ("labels9.npz", "labels must be in [0,")),
    Case("labels-rows-mismatch", deploy(val="{f}/rows.npz"), ("rows.npz", "y has 3 rows but x has")),
    # boards
    Case("target-missing-field", deploy(target="{f}/missing.toml"), ("missing.toml", "missing target field", "ram_bytes")),
    Case("target-misspelt-field", deploy(target="{f}/misspelt.toml"), ("misspelt.toml", "did you mean flash_bytes")),
    Case("target-absurd-clock", deploy(target="{f}/absurd.toml"), ("absurd.toml", "not a plausible clock")),
    Case("target-not-toml", deploy(target="{f}/broken.toml"), ("broken.toml", "not valid TOML")),
    # outputs that cannot be written
    Case("out-under-a-file", deploy()[:-1] + ("{f}/afile/out",), ("afile", "is a file")),
    Case("out-not-creatable", export()[:-1] + ("/proc/grukit-out",), ("/proc/grukit-out", "cannot create it")),
    Case("prune-out-not-onnx", ("prune", str(DEMO_ONNX), "--calib", str(DEMO_CALIB), "--ratio", "0.5", "--out",
                                "{out}.txt"), (".txt", "give a .onnx file name")),
    Case("prune-out-under-a-file", ("prune", str(DEMO_ONNX), "--calib", str(DEMO_CALIB), "--ratio", "0.5", "--out",
                                    "{f}/afile/pruned.onnx"), ("afile", "is a file")),
    Case("prune-too-many-units", prune(str(DEMO_ONNX), str(DEMO_CALIB), "--units", "64"),
         ("layer 0 has 32 hidden units: cannot keep 64",)),
    Case("prune-ratio-1", prune(str(DEMO_ONNX), str(DEMO_CALIB), "--ratio", "1"), ("ratio", "[0, 1)")),
    Case("usage-error", ("prune", str(DEMO_ONNX), "--calib", str(DEMO_CALIB), "--ratio", "0.5"),
         ("the following arguments are required: --out",)),
]


# ---------------------------------------------------------------- the broken files, made once


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("broken")
    good = DEMO_ONNX.read_bytes()
    (f / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (f / "empty.onnx").write_bytes(b"")
    (f / "garbage.onnx").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
    (f / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (f / "folder.onnx").mkdir()
    (f / "afile").write_text("")
    _onnx_models(f)
    _pt2_files(f)
    _keras_files(f)
    _tflite_files(f)
    _data_files(f)
    _target_files(f)
    (f / MARKER).unlink(missing_ok=True)  # Keras ran the Lambda once, building the model it saved
    return f


def _onnx_models(f: Path) -> None:
    proto = onnx.load(str(DEMO_ONNX))
    sin = onnx.load(str(DEMO_ONNX))
    gru = next(n for n in sin.graph.node if n.op_type == "GRU")
    gru.input[0] = "x_sin"
    sin.graph.node.insert(0, helper.make_node("Sin", [sin.graph.input[0].name], ["x_sin"]))
    onnx.save(sin, str(f / "sin_front.onnx"))
    clipped = onnx.load(str(DEMO_ONNX))
    next(n for n in clipped.graph.node if n.op_type == "GRU").attribute.append(helper.make_attribute("clip", 1.0))
    onnx.save(clipped, str(f / "clipped.onnx"))
    init = proto.graph.initializer[0]
    w = numpy_helper.to_array(init).copy()
    w.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(proto, str(f / "nan_weights.onnx"))
    outside = onnx.load(str(DEMO_ONNX))
    tensor = outside.graph.initializer[0]
    (f / "secret.bin").write_bytes(numpy_helper.to_array(tensor).tobytes())
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"  # a weight read from a file outside the model's folder
    (f / "sub").mkdir()
    onnx.save(outside, str(f / "sub" / "outside.onnx"))


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(3, 8, batch_first=True)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.fc(y[:, -1])


class _RunsCode:
    """What a crafted pickle holds: unpickling it calls open(MARKER, "w")."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _pt2_files(f: Path) -> None:
    torch.manual_seed(0)
    good = f / "good.pt2"
    torch.export.save(torch.export.export(_Net().eval(), (torch.zeros(1, 5, 3),)), good)
    data = good.read_bytes()
    (f / "truncated.pt2").write_bytes(data[: len(data) // 2])
    payload = io.BytesIO()
    torch.save(_RunsCode(str(f / MARKER)), payload)
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(f / "corrupt.pt2", "w") as bad, \
            zipfile.ZipFile(f / "pickled_code.pt2", "w") as evil:
        for info in z.infolist():
            member = z.read(info.filename)
            bad.writestr(info, b"{not json" if info.filename.endswith("model.json") else member)
            # torch.export.load unpickles the sample inputs with weights_only=False after a failed safe try
            evil.writestr(info, payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else member)


def _keras_files(f: Path) -> None:
    import keras

    good = f / "good.keras"
    keras_models.dropout_relu_softmax().save(good)
    data = good.read_bytes()
    (f / "truncated.keras").write_bytes(data[: len(data) // 2])
    marker = str(f / MARKER)
    stack = [keras.Input((keras_models.T, keras_models.I)), keras.layers.GRU(4),
             keras.layers.Lambda(lambda x: (open(marker, "w"), x)[1])]
    keras.Sequential(stack).save(f / "lambda.keras")
    with zipfile.ZipFile(good) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    _zip(f / "noconfig.keras", {k: v for k, v in members.items() if k != "config.json"})
    _zip(f / "zip_slip.keras", {**members, f"../../{MARKER}": b"written outside"})
    _zip(f / "bomb.keras", members, claims={"model.weights.h5": 4 << 30})
    weights = io.BytesIO(members["model.weights.h5"])
    with h5py.File(weights, "r+") as h5:
        h5["outside"] = h5py.ExternalLink(str(f / "elsewhere.h5"), "/")
    _zip(f / "h5_link.keras", {**members, "model.weights.h5": weights.getvalue()})


def _zip(path: Path, members: dict[str, bytes], claims: dict[str, int] | None = None) -> None:
    """A zip archive of members; claims: sizes its directory states instead of the true ones (a zip bomb's
    directory states gigabytes; writing them for real would take the test seconds and the disk gigabytes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for info in z.filelist:
            if claims and info.filename in claims:
                info.file_size = claims[info.filename]


def _tflite_files(f: Path) -> None:
    model = grukit.load(DEMO_ONNX)
    qmodel = grukit.quantize(model, np.load(DEMO_CALIB)["x"][:16])
    export_tflite_step(qmodel, f / "good.tflite")
    data = (f / "good.tflite").read_bytes()
    (f / "truncated.tflite").write_bytes(data[:200] + bytes(len(data) // 3))
    # A valid .tflite another tool wrote: the same file with its metadata entry under another name.
    name = GRUKIT_METADATA_NAME.encode()
    entry = len(name).to_bytes(4, "little") + name + b"\0"
    assert data.count(entry) == 1
    (f / "foreign.tflite").write_bytes(data.replace(entry, entry[:-2] + b"X\0"))


def _data_files(f: Path) -> None:
    calib = np.load(DEMO_CALIB)["x"][:8]
    val = np.load(DEMO_VAL)
    x, y = val["x"][:8], val["y"][:8]
    data = DEMO_CALIB.read_bytes()
    (f / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.savez(f / "no_x.npz", inputs=calib)
    np.savez(f / "features5.npz", x=np.zeros((4, 10, 5), np.float32))
    np.savez(f / "empty.npz", x=np.zeros((0, 10, calib.shape[2]), np.float32))
    nan = calib.copy()
    nan[1, 2, 0] = np.nan
    np.savez(f / "nan.npz", x=nan)
    inf = x.copy()
    inf[0, 0, 0] = np.inf
    np.savez(f / "val_inf.npz", x=inf, y=y)
    np.savez(f / "objects.npz", x=np.array([_RunsCode(str(f / MARKER))], dtype=object), y=y)
    np.savez(f / "labels9.npz", x=x, y=np.full_like(y, 9))
    np.savez(f / "rows.npz", x=x, y=y[:3])
    buffer = io.BytesIO()
    np.savez(buffer, x=calib)
    with zipfile.ZipFile(buffer) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    _zip(f / "bomb.npz", members, claims={"x.npy": 16 << 30})


def _target_files(f: Path) -> None:
    text = (TARGETS_DIR / f"{BOARD}.toml").read_text()
    (f / "missing.toml").write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("ram_bytes")))
    (f / "misspelt.toml").write_text(text.replace("flash_bytes", "flash_byte"))
    (f / "absurd.toml").write_text("\n".join("clock_hz = 80" if ln.startswith("clock_hz") else ln
                                             for ln in text.splitlines()))
    (f / "broken.toml").write_text(text + "\nname = [\n")


# ---------------------------------------------------------------- the table


@pytest.fixture
def tripwire(monkeypatch):
    """Bad input must be refused before any of these runs."""

    def work_started(*args, **kwargs):
        raise AssertionError("bad input reached the work: it should have been refused before")

    monkeypatch.setattr(pipeline, "_quantize", work_started)
    monkeypatch.setattr(pipeline, "Evaluation", work_started)
    monkeypatch.setattr(artifacts, "write_artifacts", work_started)
    monkeypatch.setattr(grukit, "quantize", work_started)
    for name in ("unit_importance", "refit", "search", "sparsify"):
        monkeypatch.setattr(prune_module, name, work_started)


def test_the_table_has_twenty_or_more_cases_over_every_command():
    assert len(CASES) >= 20
    assert {c.argv[0] for c in CASES} == {"deploy", "export", "inspect", "prune"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_input_is_one_line_and_exit_2(case, broken, tmp_path, capfd, tripwire):
    out = tmp_path / "out"
    argv = [a.format(f=broken, out=out) for a in case.argv]
    before = _listing(broken)
    try:
        code = cli(argv)
    except SystemExit as e:  # argparse's usage errors leave this way, as from the console script
        code = e.code
    stdout, stderr = capfd.readouterr()
    assert code == 2, f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith(f"grukit {argv[0]}: error: "), lines[0]
    for fragment in case.expect:
        assert fragment in lines[0], f"{fragment!r} not in: {lines[0]}"
    assert stdout == "", f"stdout: {stdout}"
    assert list(tmp_path.iterdir()) == [], "left behind: " + ", ".join(p.name for p in tmp_path.iterdir())
    assert _listing(broken) == before, "a file appeared beside the inputs"
    assert not (broken.parent / MARKER).exists() and not (broken / MARKER).exists()


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_bad_input_in_a_fresh_process_is_quiet(broken):
    """The real console process: torch's logging and Python's warnings go to the terminal there by default."""
    import subprocess
    import sys

    for name in ("truncated.pt2", "pickled_code.pt2"):
        proc = subprocess.run([sys.executable, "-m", "grukit.cli", "inspect", str(broken / name)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("grukit inspect: error: "), proc.stderr
    assert not (broken / MARKER).exists()


def test_the_same_pt2_loads_when_it_is_intact(broken):
    """The refusals above are about the crafted parts: the file they were made from loads."""
    model = grukit.load(broken / "good.pt2")
    assert isinstance(model, GRUModel) and model.layers[0].hidden_size == 8
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # restored after the load


def test_an_existing_output_survives_a_bad_input(broken, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    assert cli(list(deploy("{f}/truncated.onnx".format(f=broken))[:-1]) + [str(out)]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "previous.txt").read_text() == "kept"


def test_missing_output_parents_are_not_left_behind(broken, tmp_path, capfd):
    deep = tmp_path / "a" / "b" / "out"
    assert cli(list(deploy("{f}/truncated.onnx".format(f=broken))[:-1]) + [str(deep)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_warnings_are_one_line_and_only_grukits_own(capsys):
    from grukit.cli import _one_line_warning

    show = _one_line_warning("deploy")
    show(UserWarning("model.keras: skipped: Keras is not importable"), UserWarning,
         grukit.export.load.__file__, 64)
    show(DeprecationWarning("__array__ implementation doesn't accept a copy keyword"), DeprecationWarning,
         np.__file__, 1)
    assert capsys.readouterr().err == "grukit deploy: warning: model.keras: skipped: Keras is not importable\n"


def test_a_model_beyond_the_c_kernels_limits_is_refused_before_the_exports(tmp_path, capfd, monkeypatch):
    """Products of 260 inputs with weights all of one size: |x - zp| * sum |w| reaches 128 * 127 * 260, over
    the 2^22 the int8 kernel's packed accumulators allow. Refused from the quick min/max model, naming the
    bound, before the exports, the evaluation and the observer search."""
    rng = np.random.default_rng(0)
    H, I = 260, 2
    sign = lambda *shape: rng.choice([-1.0, 1.0], shape)  # noqa: E731
    layer = GRULayer(GRUDirection(W=sign(3, H, I), R=sign(3, H, H) / H, Wb=np.zeros((3, H)), Rb=np.zeros((3, H))))
    model = GRUModel(layers=(layer,), head=Head((Dense(sign(2, H) / H, np.zeros(2)),), "last_step"), name="wide")
    export_onnx_sequence(model, tmp_path / "wide.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(8, 10, I)).astype(np.float32))
    np.savez(tmp_path / "val.npz", x=rng.normal(size=(8, 10, I)).astype(np.float32), y=rng.integers(0, 2, 8))

    def work_started(*args, **kwargs):
        raise AssertionError("the exports or the evaluation ran before the limit was checked")

    quantize_model = pipeline.quantize_model

    def quick_only(*args, observer, **kwargs):
        if observer != "minmax":
            work_started()
        return quantize_model(*args, observer=observer, **kwargs)

    monkeypatch.setattr(pipeline, "quantize_model", quick_only)
    monkeypatch.setattr(pipeline, "write_artifacts", work_started)
    monkeypatch.setattr(pipeline.Evaluation, "integer", work_started)
    before = sorted(tmp_path.iterdir())
    code = cli(["deploy", str(tmp_path / "wide.onnx"), "--calib", str(tmp_path / "calib.npz"), "--val",
                str(tmp_path / "val.npz"), "--target", BOARD, "--out", str(tmp_path / "out")])
    _, err = capfd.readouterr()
    assert code == 2 and err.count("\n") == 1, err
    assert "beyond the C kernel's limits" in err and "packed products" in err and "--scheme 16x8" in err, err
    assert sorted(tmp_path.iterdir()) == before
