"""The block-sparse products of the fused C GRU (grukit_fc_s8 / grukit_fc_s16 with block_groups / group_index).

Models get whole 4-row x 8-column blocks of every gate matrix (W_g [H, I], R_g [H, H]) and head layer
(W [O, F]) set to 0 in float, aligned at row 0 / column 0 of each matrix (a partial block at an edge counts),
before quantizing with weight_rounding="nearest": with symmetric weights a zero block then quantizes to exact
zeros (the default "output" rounding moves rounding errors into them). Then:
- the C kernel (host build, strict and with UBSan + ASan) and its Python twin give the NumPy integer runtime's
  integers, every output and every layer's state at every step, for both schemes and both
  linear_before_reset values, 2 layers and a head of 2 dense layers;
- the generator writes a product sparse only where that is smaller, counts what it writes, and writes a model
  without zero blocks exactly as with sparse=False;
- on the emulated Cortex-M4 (skipped without arm-none-eabi-gcc / qemu-system-arm) the sparse build is
  bit-exact, runs fewer instructions per step than the dense build of the same model and takes less flash.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import firmware_build as fb
import grukit
from gru_factory import random_inputs, random_model
from grukit.core.model import GRUDirection
from grukit.firmware_ref import c_export, host, kernel, measure
from grukit.verify import assert_identical
from test_firmware_gru import GRU_DRIVER, GRU_SOURCE, Case, check, golden_stream, run_on_host

BLOCK = (4, 8)  # the kernel's group: 4 rows x 8 columns
NEAREST = "nearest"  # the weight rounding that keeps a float 0 an integer 0
I, H, HIDDEN, O = 11, 18, 10, 3  # edge blocks everywhere: 11 and 18 columns, 18 rows (gates padded to 20)


def zero_blocks(w: np.ndarray, fraction: float, rng) -> np.ndarray:
    """w [rows, cols] with round(fraction x its blocks) 4x8 blocks, chosen at random, set to 0."""
    w = np.array(w, np.float64)
    rows, cols = -(-w.shape[0] // BLOCK[0]), -(-w.shape[1] // BLOCK[1])
    for k in rng.permutation(rows * cols)[:int(round(fraction * rows * cols))]:
        r, c = divmod(int(k), cols)
        w[r * BLOCK[0]:(r + 1) * BLOCK[0], c * BLOCK[1]:(c + 1) * BLOCK[1]] = 0.0
    return w


def block_pruned(model, fraction: float, seed: int, only: str | None = None):
    """model with `fraction` of the blocks of every gate matrix and head layer zeroed; `only`: just the
    matrices whose name (layer<l>/W, layer<l>/R, head<k>) starts with it."""
    rng = np.random.default_rng(seed)
    prune = lambda name, w: zero_blocks(w, fraction, rng) if only is None or name.startswith(only) else w  # noqa: E731
    layers = []
    for li, layer in enumerate(model.layers):
        d = layer.forward
        W = np.stack([prune(f"layer{li}/W", d.W[g]) for g in range(3)])
        R = np.stack([prune(f"layer{li}/R", d.R[g]) for g in range(3)])
        layers.append(replace(layer, forward=GRUDirection(W=W, R=R, Wb=d.Wb, Rb=d.Rb)))
    head = replace(model.head, layers=tuple(replace(dense, W=prune(f"head{k}", dense.W))
                                            for k, dense in enumerate(model.head.layers)))
    return replace(model, layers=tuple(layers), head=head)


def quantized(scheme: str, lbr: int, fraction: float, seed: int = 30, only: str | None = None, per_step=None):
    """A 2-layer model with a head of 2 dense layers (ReLU, then linear), blocks zeroed, quantized."""
    model = random_model(seed, I=I, H=H, O=O, layers=2, lbr=lbr, hidden=[(HIDDEN, "relu")],
                         per_step=bool(lbr == 0) if per_step is None else per_step)
    model = block_pruned(model, fraction, seed + 1, only)
    return quantize(model, seed, scheme)


def quantize(model, seed: int, scheme: str):
    """Zeros stay zeros: each weight rounded to its nearest integer (NEAREST)."""
    return grukit.quantize(model, random_inputs(seed, N=16, T=12, I=I), scheme=scheme, weight_rounding=NEAREST)


def products(kmodel) -> dict:
    """Every product of a prepared model by name (x_fc, h_fc, hn_fc of each layer, each head layer)."""
    fcs = {}
    for li, layer in enumerate(kmodel.layers):
        fcs.update({f"l{li}.x_fc": layer.x_fc, f"l{li}.h_fc": layer.h_fc})
        if not layer.linear_before_reset:
            fcs[f"l{li}.hn_fc"] = layer.hn_fc
    fcs.update({f"head{k}": dense.fc for k, dense in enumerate(kmodel.head)})
    return fcs


def stacked_weights(qmodel) -> dict:
    """The int8 weights of each product as the kernel stacks them (each gate padded to 4 rows on its own),
    read from the quantized model: what the sparse form's bytes are counted from."""
    pad = lambda w: np.concatenate([w, np.zeros((-w.shape[0] % 4, w.shape[1]), w.dtype)])  # noqa: E731
    out = {}
    for li, layer in enumerate(qmodel.layers):
        out[f"l{li}.x_fc"] = np.concatenate([pad(np.asarray(layer.fcs[f"gx_{g}"].w_q)) for g in "zrn"])
        h_gates = "zrn" if layer.linear_before_reset else "zr"
        out[f"l{li}.h_fc"] = np.concatenate([pad(np.asarray(layer.fcs[f"gh_{g}"].w_q)) for g in h_gates])
        if not layer.linear_before_reset:
            out[f"l{li}.hn_fc"] = pad(np.asarray(layer.fcs["gh_n"].w_q))
    out.update({f"head{k}": pad(np.asarray(d.fc.w_q)) for k, d in enumerate(qmodel.head.layers)})
    return out


def group_counts(w: np.ndarray) -> tuple[int, int, int]:
    """(blocks, groups, non-zero groups) of stacked weights, scanned group by group."""
    blocks, groups = w.shape[0] // 4, -(-w.shape[1] // 8)
    stored = sum(bool(np.any(w[4 * b:4 * b + 4, 8 * g:8 * g + 8])) for b in range(blocks) for g in range(groups))
    return blocks, groups, stored


def assert_runs_like_numpy(qmodel, x_q: np.ndarray, what: str) -> None:
    """The C kernel on the host and the Python twin equal run_int: y and every layer's states."""
    y_ref, states_ref = qmodel.run_int(x_q)
    for who, (y, states) in (("C", host.run_c_host(qmodel, x_q)),
                             ("twin", kernel.run_model(kernel.prepare_model(qmodel), x_q))):
        assert_identical(y, y_ref, f"{what} {who}: y")
        assert len(states) == len(states_ref)
        for layer, (got, expected) in enumerate(zip(states, states_ref)):
            assert_identical(got, expected, f"{what} {who}: layer {layer} states")


def golden_inputs(qmodel, seed: int, n: int = 6, t: int = 10) -> np.ndarray:
    # 1.5x wider than calibration: some inputs saturate the input quantization and the gates.
    return qmodel.quantize_input(random_inputs(seed, N=n, T=t, I=I, scale=1.5))


# (scheme, linear_before_reset): every combination, 70% of the blocks zero.
SPARSE_CASES = [("int8", 1), ("int8", 0), ("16x8", 1), ("16x8", 0)]
CASE_IDS = [f"{'s8' if s == 'int8' else 's16'}_lbr{lbr}" for s, lbr in SPARSE_CASES]


# ---------------------------------------------------------------- bit-exact on the host and in the twin


@pytest.mark.parametrize("scheme, lbr", SPARSE_CASES, ids=CASE_IDS)
def test_sparse_model_matches_numpy(scheme, lbr):
    fb.require_host_cc()
    qmodel = quantized(scheme, lbr, 0.7)
    forms = {name: fc.block_groups is not None for name, fc in products(kernel.prepare_model(qmodel)).items()}
    assert all(forms.values()), f"every product should be sparse at 70% zero blocks: {forms}"
    assert_runs_like_numpy(qmodel, golden_inputs(qmodel, 31), f"{scheme} lbr {lbr}")


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_sparse_model_sanitized_every_step(scheme, tmp_path):
    """gru_driver (every state and output after every step, save/restore) built with UBSan + ASan: the sparse
    loops read only their arrays and the groups' input words. The head's first layer is all zero (a product
    storing no group: weights and group_index NULL, its outputs its biases) and the rest 70% sparse."""
    if not fb.sanitizers_work(fb.require_host_cc(), tmp_path):
        pytest.skip("the host cc cannot link -fsanitize=undefined,address (install libasan / libubsan)")
    model = block_pruned(random_model(32, I=I, H=H, O=O, layers=2, lbr=[0, 0], hidden=[(HIDDEN, "relu")],
                                      per_step=True), 0.7, 33)
    first = model.head.layers[0]
    model = replace(model, head=replace(model.head, layers=(replace(first, W=np.zeros_like(first.W)),
                                                            *model.head.layers[1:])))
    qmodel = quantize(model, 32, scheme)
    fcs = products(kernel.prepare_model(qmodel))
    assert len(fcs["head0"].group_index) == 0 and fcs["head0"].weights.size == 0
    assert all(fc.block_groups is not None for fc in fcs.values())
    case = Case(f"sparse_{scheme}", qmodel, golden_inputs(qmodel, 34, n=3, t=8))
    run_on_host(case, tmp_path, sanitize=True)
    assert "_group_index" in (tmp_path / case.name / "grukit_model.c").read_text()


def test_dense_and_sparse_products_mix_in_one_model():
    """Zero blocks in layer 1's recurrent matrices only: its h_fc and hn_fc are sparse, every other product
    dense, and the model stays bit-exact."""
    fb.require_host_cc()
    qmodel = quantized("int8", 0, 0.7, seed=35, only="layer1/R")
    forms = {name: fc.block_groups is not None for name, fc in products(kernel.prepare_model(qmodel)).items()}
    assert forms == {"l0.x_fc": False, "l0.h_fc": False, "l0.hn_fc": False, "l1.x_fc": False, "l1.h_fc": True,
                     "l1.hn_fc": True, "head0": False, "head1": False}
    assert_runs_like_numpy(qmodel, golden_inputs(qmodel, 36), "int8 mixed forms")


# ---------------------------------------------------------------- what the generator writes


ARRAY = re.compile(r"^static const (\w+) (\w+)\[(\d+)\] = \{", re.MULTILINE)
ELEMENT_BYTES = {"uint8_t": 1, "int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8, "grukit_requant_s32": 16,
                 "grukit_requant_s64": 16}  # the model's structs (layers, head) are not constants


def written_bytes(c_file: Path) -> int:
    """Bytes of the constant arrays a generated .c declares, read from its text."""
    return sum(ELEMENT_BYTES[ctype] * int(n) for ctype, _, n in ARRAY.findall(c_file.read_text())
               if ctype in ELEMENT_BYTES)


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_sparse_constants_are_smaller_and_counted(scheme, tmp_path):
    qmodel = quantized(scheme, 0, 0.7)
    sparse_bytes, dense_bytes = c_export.constant_bytes(qmodel), c_export.constant_bytes(qmodel, sparse=False)
    # The saving, product by product, from the quantized weights: a dense group is 8 words (32 bytes); the
    # sparse form keeps the non-zero groups' words, a uint8 index per stored group and a uint8 count per block.
    saving = all_groups = all_stored = 0
    for w in stacked_weights(qmodel).values():
        blocks, groups, stored = group_counts(w)
        saving += 32 * blocks * groups - (33 * stored + blocks)
        all_groups, all_stored = all_groups + blocks * groups, all_stored + stored
    assert all_stored < 0.4 * all_groups  # the padding rows of partial blocks make a few more groups zero
    assert dense_bytes - sparse_bytes == saving > 0
    for sparse, expected in ((True, sparse_bytes), (False, dense_bytes)):
        c_file = c_export.export_c(qmodel, tmp_path / str(sparse), sparse=sparse)[1]
        assert written_bytes(c_file) == expected, sparse  # constant_bytes counts what is written
        assert ("_group_index" in c_file.read_text()) == sparse


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_dense_model_is_written_as_with_sparse_off(scheme, tmp_path):
    """No zero block: every product dense, the files byte for byte those of sparse=False."""
    model = random_model(37, I=I, H=H, O=O, layers=2, hidden=[(HIDDEN, "relu")])
    qmodel = quantize(model, 37, scheme)
    assert all(fc.block_groups is None for fc in products(kernel.prepare_model(qmodel)).values())
    auto = [p.read_bytes() for p in c_export.export_c(qmodel, tmp_path / "auto")]
    dense = [p.read_bytes() for p in c_export.export_c(qmodel, tmp_path / "dense", sparse=False)]
    assert auto == dense
    assert c_export.constant_bytes(qmodel) == c_export.constant_bytes(qmodel, sparse=False)
    assert b"block_groups" not in auto[1] and b"block-sparse" not in auto[1]


def test_sparse_only_where_smaller():
    """The sparse form costs a uint8 count per block and a uint8 index per stored group: for a 40 x 64 product
    (10 blocks of 8 groups, 2,560 bytes dense) 2 zero groups leave it larger (78 x 33 + 10 = 2,584 bytes),
    3 make it smaller (77 x 33 + 10 = 2,551)."""
    w = np.ones((40, 64), np.int8)
    w[0:4, 0:8] = 0
    w[4:8, 8:16] = 0
    packed = kernel.pack_pairs_s8(w)
    words, block_groups, group_index = kernel.weight_form(packed, w, True)
    assert block_groups is None and group_index is None and words is packed
    w[37, 56:64] = 0  # the last block's last group: rows 36 and 38 still hold weights
    assert kernel.weight_form(kernel.pack_pairs_s8(w), w, True)[1] is None
    w[36:40, 56:64] = 0
    words, block_groups, group_index = kernel.weight_form(kernel.pack_pairs_s8(w), w, True)
    assert list(block_groups) == [7, 7, *[8] * 7, 7] and len(group_index) == 77 and len(words) == 77 * 8
    assert list(group_index[:14]) == [1, 2, 3, 4, 5, 6, 7, 0, 2, 3, 4, 5, 6, 7]
    assert list(group_index[-7:]) == [0, 1, 2, 3, 4, 5, 6]
    dense_words = np.asarray(kernel.pack_pairs_s8(w)).reshape(10, 8, 8)
    assert_identical(words[:8], dense_words[0, 1], "the first stored group's words")
    assert kernel.weight_form(kernel.pack_pairs_s8(w), w, False)[1] is None  # sparse=False: always dense


def test_depth_beyond_uint8_groups_stays_dense():
    """More than 255 groups per row (K > 2040) cannot be indexed by uint8: dense, however many zeros."""
    w = np.zeros((4, 2048), np.int8)
    w[0, 0] = 1
    packed = kernel.pack_quads_s16(w)
    words, block_groups, _ = kernel.weight_form(packed, w, True)
    assert block_groups is None and words is packed
    w = w[:, :2040]
    assert kernel.weight_form(kernel.pack_quads_s16(w), w, True)[1] is not None


# ---------------------------------------------------------------- emulated Cortex-M4


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
def test_sparse_cortex_m4_is_exact_faster_and_smaller(scheme, tmp_path):
    """The DSP path in QEMU mps2-an386: every state and output bit-exact; fewer instructions per step and
    less flash (model constants + kernel code, arm-none-eabi-size) than the dense build of the same model."""
    fb.require_arm_tools("mps2-an386")
    qmodel = quantized(scheme, 1, 0.7, seed=38)
    case = Case(f"sparse_m4_{scheme}", qmodel, golden_inputs(qmodel, 39, n=2, t=6))
    gen = tmp_path / "sparse"
    c_export.export_c(qmodel, gen)
    golden_c = golden_stream(case).write_c(tmp_path / "golden.c", "tests/test_firmware_sparse.py (NumPy runtime)")
    elf = fb.build_arm([GRU_SOURCE, gen / "grukit_model.c", GRU_DRIVER, golden_c], tmp_path / "gru.elf",
                       defines={"GRUKIT_MODEL_HEADER": f'"{gen / "grukit_model.h"}"'})
    check(case, fb.run_qemu(elf, machine="mps2-an386"))

    sparse_steps = measure.measure_step_instructions(qmodel, "mps2-an386", steps=4)
    dense_steps = measure.measure_step_instructions(qmodel, "mps2-an386", steps=4, sparse=False)
    assert sparse_steps < dense_steps, (sparse_steps, dense_steps)
    dense_c = c_export.export_c(qmodel, tmp_path / "dense", sparse=False)[1]
    sparse_flash = measure.built_flash_bytes(gen / "grukit_model.c", scheme)
    dense_flash = measure.built_flash_bytes(dense_c, scheme)
    assert sparse_flash.kernel_bytes == dense_flash.kernel_bytes  # the same kernel code either way
    assert sparse_flash.model_bytes < dense_flash.model_bytes, (sparse_flash, dense_flash)
