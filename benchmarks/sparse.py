"""Block-sparse products on an emulated Cortex-M4: flash and instructions per step, dense against sparse.

One random model (I=16, two GRU layers of H=64, linear_before_reset 1, a 4-output last-step head) is pruned
to 0, 50, 75 and 90% zero blocks of 4 rows x 8 columns (in every gate matrix W_g, R_g and the head's W, the
blocks of smallest root mean square in each matrix, aligned at row 0 / column 0), quantized (int8 and 16x8,
weight_rounding="nearest" so that the zero blocks stay zero) and generated twice: sparse=True (each product
block-sparse where that is smaller) and sparse=False (every product dense). Columns:
- products sparse: how many of the model's products (x_fc, h_fc of each layer, the head) took the sparse form;
- flash: text + data of the -O2 Cortex-M4 build, model constants + kernel code
  (grukit.firmware_ref.measure.built_flash_bytes, as `grukit deploy` measures it);
- instructions / step: mean of 8 steps in QEMU mps2-an386 under -icount, DSP path (instructions, not cycles);
- bit-exact: the sparse build's C on the host (run_c_host) against the NumPy integer runtime.

    .venv/bin/python benchmarks/sparse.py
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import grukit  # noqa: E402
from gru_factory import random_inputs, random_model  # noqa: E402
from grukit.core.model import GRUDirection  # noqa: E402
from grukit.firmware_ref import build, c_export, host, kernel, measure  # noqa: E402
from grukit.verify import first_mismatch  # noqa: E402

I, H, LAYERS, O = 16, 64, 2, 4
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
MACHINE = "mps2-an386"  # Cortex-M4
STEPS = 8
BLOCK = (4, 8)


def zero_smallest_blocks(w: np.ndarray, fraction: float) -> np.ndarray:
    """w with round(fraction x its blocks) 4x8 blocks of smallest root mean square set to 0 (an edge block's
    mean over the weights it has)."""
    w = np.array(w, np.float64)
    rows, cols = -(-w.shape[0] // BLOCK[0]), -(-w.shape[1] // BLOCK[1])
    rms = np.array([[np.sqrt(np.mean(w[r * BLOCK[0]:(r + 1) * BLOCK[0], c * BLOCK[1]:(c + 1) * BLOCK[1]] ** 2))
                     for c in range(cols)] for r in range(rows)])
    for k in np.argsort(rms.ravel(), kind="stable")[:int(round(fraction * rms.size))]:
        r, c = divmod(int(k), cols)
        w[r * BLOCK[0]:(r + 1) * BLOCK[0], c * BLOCK[1]:(c + 1) * BLOCK[1]] = 0.0
    return w


def pruned(model, fraction: float):
    layers = []
    for layer in model.layers:
        d = layer.forward
        W = np.stack([zero_smallest_blocks(d.W[g], fraction) for g in range(3)])
        R = np.stack([zero_smallest_blocks(d.R[g], fraction) for g in range(3)])
        layers.append(replace(layer, forward=GRUDirection(W=W, R=R, Wb=d.Wb, Rb=d.Rb)))
    head = replace(model.head, layers=tuple(replace(dense, W=zero_smallest_blocks(dense.W, fraction))
                                            for dense in model.head.layers))
    return replace(model, layers=tuple(layers), head=head)


def sparse_products(qmodel) -> str:
    km = kernel.prepare_model(qmodel)
    fcs = [fc for layer in km.layers for fc in (layer.x_fc, layer.h_fc, layer.hn_fc) if fc.rows]
    fcs += [dense.fc for dense in km.head]
    return f"{sum(fc.block_groups is not None for fc in fcs)} of {len(fcs)}"


def flash(qmodel, out: Path, sparse: bool) -> int:
    c_file = c_export.export_c(qmodel, out, sparse=sparse)[1]
    built = measure.built_flash_bytes(c_file, qmodel.scheme)
    return built.model_bytes + built.kernel_bytes


def main() -> None:
    reason = build.emulation_unavailable_reason(MACHINE)
    if reason is not None:
        raise SystemExit(reason)
    model = random_model(0, I=I, H=H, O=O, layers=LAYERS, lbr=1)
    calib = random_inputs(0, N=16, T=20, I=I)
    x = random_inputs(1, N=8, T=20, I=I, scale=1.5)
    print(f"I={I}, {LAYERS} layers of H={H}, head 4 outputs; Cortex-M4 (QEMU {MACHINE}), DSP path\n")
    print("| scheme | zero blocks | products sparse | flash dense (B) | flash sparse (B) | instructions / step dense | "
          "instructions / step sparse | sparse / dense | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for scheme in ("int8", "16x8"):
            for fraction in SPARSITIES:
                q = grukit.quantize(pruned(model, fraction), calib, scheme=scheme, weight_rounding="nearest")
                tag = f"{scheme}_{int(100 * fraction)}"
                flash_dense, flash_sparse = flash(q, tmp / f"{tag}_d", False), flash(q, tmp / f"{tag}_s", True)
                steps_dense = measure.measure_step_instructions(q, MACHINE, STEPS, sparse=False)
                steps_sparse = measure.measure_step_instructions(q, MACHINE, STEPS, sparse=True)
                x_q = q.quantize_input(x)
                y_c, states_c = host.run_c_host(q, x_q)
                y_ref, states_ref = q.run_int(x_q)
                mismatches = [m for m in (first_mismatch(y_c, y_ref, "y"), *(
                    first_mismatch(a, b, f"layer {k} states") for k, (a, b) in enumerate(zip(states_c, states_ref))))
                    if m is not None]
                exact = "yes" if not mismatches else f"NO ({mismatches[0]})"
                print(f"| {scheme} | {100 * fraction:.0f}% | {sparse_products(q)} | {flash_dense:,} | {flash_sparse:,} | "
                      f"{steps_dense:,.0f} | {steps_sparse:,.0f} | {steps_sparse / steps_dense:.2f} | "
                      f"{exact} |")


if __name__ == "__main__":
    main()
