"""Structured pruning (grukit.quantize.prune): removing dead units changes nothing, the refit beats no refit,
pruned models go through every stage bit-exactly, the ratio search decides on calibration data, and the CLI
refuses bad requests with one line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import firmware_build as fb
import grukit
from gru_factory import random_inputs, random_model
from grukit.cli import main as cli
from grukit.core.model import GRUDirection, GRULayer, GRUModel, Head
from grukit.export.onnx_export import export_onnx_sequence
from grukit.export.tflite_export import export_tflite_sequence, export_tflite_step
from grukit.firmware_ref import host
from grukit.quantize import prune as P
from grukit.verify import assert_identical, compare_tflite_micro

# One line per shape the issue names: both gate variants, stacked layers, last-step and per-step heads.
CASES = {
    "lbr1_last_step": dict(seed=40, I=4, H=16, O=3),
    "lbr0_per_step": dict(seed=41, I=3, H=12, O=2, lbr=0, per_step=True),
    "stacked_mixed": dict(seed=42, I=5, H=14, O=4, layers=2, lbr=[1, 0]),
    "mlp_head": dict(seed=43, I=4, H=16, O=3, hidden=[(8, "relu")], activation="softmax"),
    "no_head": dict(seed=44, I=3, H=10, O=10, layers=2, head=False),  # the top layer's state is the output
}


def _kill(model: GRUModel, dead: list[np.ndarray]) -> GRUModel:
    """The model with the ``dead`` units of each layer zeroed in every gate (rows of W, R, biases): their
    state is 0 at every step, whatever reads it."""
    layers = []
    for layer, units in zip(model.layers, dead):
        d = layer.forward
        W, R, Wb, Rb = d.W.copy(), d.R.copy(), d.Wb.copy(), d.Rb.copy()
        for a in (W, R, Wb, Rb):
            a[:, units] = 0
        layers.append(replace(layer, forward=GRUDirection(W, R, Wb, Rb)))
    return replace(model, layers=tuple(layers))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("criterion", P.CRITERIA)
def test_removing_dead_units_keeps_the_outputs(case, criterion):
    kw = CASES[case]
    base = random_model(**kw)
    rng = np.random.default_rng(kw["seed"])
    top = len(base.layers) - (base.head is None)  # a head-less model's top layer stays whole
    dead = [np.sort(rng.choice(layer.hidden_size, layer.hidden_size // 4 if li < top else 0, replace=False))
            for li, layer in enumerate(base.layers)]
    model = _kill(base, dead)
    x = random_inputs(kw["seed"], N=16, T=12, I=kw["I"])
    scores = P.unit_importance(model, x, criterion)
    for s, units in zip(scores, dead):  # dead units score lowest, so keeping the others takes exactly them
        assert len(units) == 0 or s[units].max() < np.delete(s, units).min()
    keep = [layer.hidden_size - len(units) for layer, units in zip(model.layers, dead)]
    result = P.prune(model, x, units=keep, criterion=criterion, refit_weights=False)
    for kept, units, layer in zip(result.kept, dead, model.layers):
        np.testing.assert_array_equal(kept, np.setdiff1d(np.arange(layer.hidden_size), units))
    assert [layer.hidden_size for layer in result.model.layers] == keep
    x_new = random_inputs(kw["seed"] + 1, N=8, T=15, I=kw["I"])
    np.testing.assert_allclose(result.model.predict(x_new), model.predict(x_new), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_the_refit_lowers_the_output_error(case):
    kw = CASES[case]
    model = random_model(**kw)
    x, x_test = (random_inputs(kw["seed"] + k, N=64, T=16, I=kw["I"]) for k in (0, 100))
    reference = model.predict(x_test)
    error = {}
    for refit in (False, True):
        pruned = P.prune(model, x, ratio=0.5, refit_weights=refit).model
        error[refit] = float(np.sqrt(np.mean((pruned.predict(x_test) - reference) ** 2)))
    assert error[True] < 0.7 * error[False], error


def test_nothing_removed_leaves_the_model_as_it_was():
    model = random_model(seed=45, layers=2)
    x = random_inputs(45, N=8, T=10, I=4)
    result = P.prune(model, x, ratio=0.0)
    for a, b in zip(result.model.layers, model.layers):
        assert a is b
    assert_identical(result.model.predict(x), model.predict(x), "ratio 0")


def test_units_per_layer_and_global_scope():
    model = random_model(seed=46, I=3, H=12, layers=2)
    x = random_inputs(46, N=16, T=10, I=3)
    assert [l.hidden_size for l in P.prune(model, x, units=[9, 5]).model.layers] == [9, 5]
    assert [l.hidden_size for l in P.prune(model, x, units=6).model.layers] == [6, 6]
    result = P.prune(model, x, ratio=0.5, scope="global")
    assert sum(l.hidden_size for l in result.model.layers) == 12
    assert result.summary(model)["ratio"] == 0.5


@pytest.mark.parametrize("scheme", ("int8", "16x8"))
@pytest.mark.parametrize("case", ("lbr0_per_step", "stacked_mixed", "mlp_head"))
def test_pruned_models_are_bit_exact_in_tflite_micro_and_the_c_kernel(case, scheme, tmp_path):
    kw = CASES[case]
    model = random_model(**kw)
    x = random_inputs(kw["seed"], N=24, T=10, I=kw["I"])
    pruned = P.prune(model, x, ratio=0.5).model
    q = grukit.quantize(pruned, x, scheme=scheme)
    x_q = q.quantize_input(x[:6])
    for path in (export_tflite_step(q, tmp_path / "step.tflite"),
                 export_tflite_sequence(q, tmp_path / "seq.tflite", x_q.shape[1])):
        result = compare_tflite_micro(q, path, x_q)
        assert result.bit_exact, f"{case} {scheme} {path.name}: {result.mismatch}"
    fb.require_host_cc()
    y_ref, states_ref = q.run_int(x_q)
    y, states = host.run_c_host(q, x_q)
    assert_identical(y, y_ref, f"{case} {scheme}: C y")
    for layer, (got, expected) in enumerate(zip(states, states_ref)):
        assert_identical(got, expected, f"{case} {scheme}: C h{layer}")


def test_pruned_onnx_loads_back(tmp_path):
    model = random_model(**CASES["mlp_head"])
    x = random_inputs(43, N=16, T=10, I=4)
    pruned = P.prune(model, x, ratio=0.5).model
    back = grukit.load(export_onnx_sequence(pruned, tmp_path / "pruned.onnx"))
    np.testing.assert_allclose(back.predict(x), pruned.predict(x), rtol=0, atol=1e-5)


def test_search_takes_the_largest_ratio_within_the_drop():
    model = random_model(seed=47, I=4, H=16, O=4)
    x = random_inputs(47, N=64, T=12, I=4)
    result, found = P.search(model, x, max_drop=0.05)
    trials = dict(found.trials)
    assert trials[found.ratio] <= 0.05 if found.ratio > 0 else True
    assert all(loss > 0.05 for ratio, loss in trials.items() if ratio > found.ratio)  # the next one up failed
    assert 1 - result.model.layers[0].hidden_size / 16 == found.ratio
    # The loss is the pruned int8 model's against the original float model, on the calibration data.
    if found.ratio > 0:
        out = grukit.quantize(result.model, x).predict(x)
        assert P.calibration_loss(model.predict(x), out, model, "classification") == trials[found.ratio]


def test_the_top_layer_of_a_head_less_model_stays_whole():
    model = random_model(seed=50, H=10, O=10, head=False)
    x = random_inputs(50, N=8, T=10, I=4)
    with pytest.raises(grukit.UnsupportedModelError, match="no head"):
        P.prune(model, x, ratio=0.5)
    stacked = random_model(seed=50, H=10, O=10, layers=2, head=False)
    assert [l.hidden_size for l in P.prune(stacked, x, ratio=0.5).model.layers] == [5, 10]


def test_bidirectional_models_are_refused():
    d = random_model(seed=48).layers[0].forward
    model = GRUModel(layers=(GRULayer(d, linear_before_reset=1, reverse=d),))
    with pytest.raises(grukit.UnsupportedModelError, match="bidirectional"):
        P.prune(model, random_inputs(48, I=4), ratio=0.5)


@pytest.fixture
def demo_files():
    from grukit.cli import DATA_DIR

    return DATA_DIR / "demo_model.onnx", DATA_DIR / "demo_calib.npz", DATA_DIR / "demo_val.npz"


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.0"], "ratio must be in [0, 1)"),
    (["--ratio", "-0.1"], "ratio must be in [0, 1)"),
    (["--units", "40"], "cannot keep 40"),
    (["--units", "16,16"], "2 unit counts for a model of 1 layers"),
    (["--ratio", "auto"], "go together"),
])
def test_bad_prune_requests_exit_2_with_one_line(args, message, demo_files, tmp_path, capsys):
    model, calib, _ = demo_files
    assert cli(["prune", str(model), "--calib", str(calib), "--out", str(tmp_path / "p.onnx"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_prune_on_a_bidirectional_model_exits_2(demo_files, tmp_path, capsys):
    d = random_model(seed=49, I=3, H=16).layers[0].forward
    bidirectional = GRUModel(layers=(GRULayer(d, 1, reverse=d),), head=Head.dense(np.ones((5, 32)), np.zeros(5)))
    model = export_onnx_sequence(bidirectional, tmp_path / "bi.onnx")
    _, calib, val = demo_files
    code = cli(["deploy", str(model), "--calib", str(calib), "--val", str(val), "--target", "stm32l476",
                "--prune", "0.5", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "bidirectional" in err and len(err.strip().splitlines()) == 1, err


def test_prune_cli_writes_a_smaller_model(demo_files, tmp_path, capsys):
    model, calib, _ = demo_files
    out = tmp_path / "pruned.onnx"
    assert cli(["prune", str(model), "--calib", str(calib), "--ratio", "0.25", "--out", str(out)]) == 0
    assert "hidden 32 -> 24" in capsys.readouterr().out
    assert grukit.load(out).layers[0].hidden_size == 24


def test_deploy_with_pruning_reports_against_the_original_float_model(demo_files, tmp_path):
    model, calib, val = demo_files
    out = tmp_path / "out"
    code = cli(["deploy", str(model), "--calib", str(calib), "--val", str(val), "--target", "stm32l476",
                "--prune", "0.25", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert code in (0, 1)
    assert report["baseline"] == "numpy-float-unpruned"
    p = report["prune"]
    assert p["ratio"] == 0.25 and p["layers"] == [{"hidden_before": 32, "hidden_after": 24}]
    assert report["model"]["hidden_size"] == [24] and report["model"]["params"] == p["params_after"]
    assert p["params_after"] < p["params_before"] and p["macs_after"] < p["macs_before"]
    board = p["boards"]["stm32l476"]
    assert board["flash_after"] < board["flash_before"]
    assert board["instructions_after"] < board["instructions_before"]
    scores = report["scores"]
    original = grukit.load(model)
    x, y = np.load(val)["x"], np.load(val)["y"]
    assert scores["numpy-float-unpruned"] == float(np.mean(original.predict(x).argmax(-1) == y))
    assert report["drop"]["numpy-int8"] == pytest.approx(scores["numpy-float-unpruned"] - scores["numpy-int8"])
    assert "## Pruning" in (out / "report.md").read_text()


# --- magnitude pruning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", P.SPARSITY_SCOPES)
def test_sparsify_zeroes_whole_kernel_blocks(scope):
    model = random_model(**CASES["stacked_mixed"])
    result = P.sparsify(model, 0.5, scope=scope)
    b0, b1 = P.KERNEL_BLOCK
    for t, (name, w) in zip(result.tensors, P._matrices(result.model)):
        rows, cols = w.shape
        for i in range(0, rows, b0):  # a block is all zero or untouched
            for j in range(0, cols, b1):
                blk, orig = w[i:i + b0, j:j + b1], dict(P._matrices(model))[name][i:i + b0, j:j + b1]
                assert (blk == 0).all() or (blk == orig).all(), name
        if scope == "matrix":
            assert t["zero_blocks"] == round(0.5 * t["blocks"]), t
    zero_blocks = sum(t["zero_blocks"] for t in result.tensors)
    assert zero_blocks == round(0.5 * sum(t["blocks"] for t in result.tensors))


def test_sparsify_refit_keeps_the_zeros_and_lowers_the_error():
    model = random_model(**CASES["mlp_head"])
    x, x_test = (random_inputs(43 + k, N=64, T=16, I=4) for k in (0, 100))
    plain = P.sparsify(model, 0.5, block=(1, 1))
    refitted = P.sparsify(model, 0.5, block=(1, 1), calib_x=x)
    for (name, a), (_, b) in zip(P._matrices(plain.model), P._matrices(refitted.model)):
        if name != "head1/W":  # the refit reaches the GRU layers and the head's first layer
            assert ((a == 0) == (b == 0)).all(), name
    error = lambda m: float(np.sqrt(np.mean((m.predict(x_test) - model.predict(x_test)) ** 2)))  # noqa: E731
    assert error(refitted.model) < 0.7 * error(plain.model)


def test_sparse_models_stay_bit_exact_in_tflite_micro_and_the_c_kernel(tmp_path):
    model = random_model(**CASES["stacked_mixed"])
    x = random_inputs(42, N=16, T=10, I=5)
    q = grukit.quantize(P.sparsify(model, 0.7, calib_x=x).model, x, scheme="int8")
    x_q = q.quantize_input(x[:6])
    result = compare_tflite_micro(q, export_tflite_step(q, tmp_path / "step.tflite"), x_q)
    assert result.bit_exact, result.mismatch
    fb.require_host_cc()
    y_ref, _ = q.run_int(x_q)
    assert_identical(host.run_c_host(q, x_q)[0], y_ref, "sparse int8: C y")


def test_bad_sparsity_requests_exit_2(demo_files, tmp_path, capsys):
    model, calib, _ = demo_files
    for args, message in ((["--sparsity", "1"], "sparsity must be in [0, 1)"),
                          (["--sparsity", "0.5", "--scope", "layer"], "does not apply"),
                          (["--ratio", "0.5", "--scope", "matrix"], "does not apply")):
        assert cli(["prune", str(model), "--calib", str(calib), "--out", str(tmp_path / "p.onnx"), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_zero_blocks_survive_quantization_and_shrink_the_c_constants():
    """Output-aware weight rounding moves rounding error between weights; a pruned (float 0) weight must stay
    an integer 0, or the generator could not leave its block out of flash."""
    from grukit.firmware_ref.c_export import constant_bytes

    model = random_model(**CASES["stacked_mixed"])
    x = random_inputs(42, N=16, T=10, I=5)
    sparse = P.sparsify(model, 0.7, calib_x=x).model
    for scheme in ("int8", "16x8"):
        q = grukit.quantize(sparse, x, scheme=scheme)
        for layer, ql in zip(sparse.layers, q.layers):
            for name, fc in ql.fcs.items():
                gate = "zrn".index(name[-1])
                w = (layer.forward.W if name.startswith("gx") else layer.forward.R)[gate]
                assert (fc.w_q[w == 0] == 0).all(), name
        assert constant_bytes(q, sparse=True) < constant_bytes(q, sparse=False)
