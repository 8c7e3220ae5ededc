"""Instructions per step of the fused C GRU on emulated Cortex-M and RISC-V cores, as a markdown table.

For each size (I=16 with H=16, 32, 64, 128; I=40 with H=64) a random 1-layer model with a 4-output
last-step head is quantized (int8 and 16x8), generated with export_c, built with arm-none-eabi-gcc
-mcpu=cortex-m4 -O2 (DSP path; the int8 portable path for comparison) and run for 8 steps of random input
(grukit.firmware_ref.measure); the I=16, H=64 int8 model (DSP path) also on a Cortex-M7 (mps2-an500), a Cortex-M33
(mps2-an505) and a Cortex-M55 (mps3-an547), and with both schemes on the portable path built for the
Cortex-M0+ (QEMU microbit, a Cortex-M0) and for 32-bit RISC-V (QEMU virt, RV32IMAC code), each where the
installed QEMU has the machine. Columns:
- instructions / step: the whole step (every op and the head), mean of 8 steps, measured by SysTick (minstret
  on RISC-V) under -icount (instructions, not cycles: on a real M4 loads take 1-2 cycles, branches 2-4, plus
  flash waits);
- instructions / MAC: that divided by 3 H (I + H) (the head's MACs are not counted in the divisor);
- kernel code, model flash: text + data bytes (Cortex-M4 build, on every row) of the kernel code the scheme links (linked with
  --gc-sections from the scheme's entry points) and of the generated model object (arrays, tables, structs),
  measured as `grukit deploy` measures flash (grukit.firmware_ref.measure.built_flash_bytes);
- RAM: state + scratch bytes.
Then, per scheme on the M4's DSP path, the step split into products and per-unit work: a least-squares fit of
instructions / step = a x MACs + b x H + c over the measured sizes (MACs = 3 H (I + H) + the head's 4 H) gives
a, the instructions per MAC of the products, and the instructions per hidden unit of everything else (gates'
element-wise ops, requantizations, table lookups) at the seed forecaster's shape I=1, H=50, measured too:
(its instructions / step - a x its MACs) / H. Issue 17's target for that: at most 80. (The input side's one
column, padded to the kernel's column group, counts as per-unit work here, as in issue 17's own estimate.)
Bit-exactness of these builds is what tests/test_firmware_gru.py checks.

    .venv/bin/python benchmarks/bench_firmware_gru.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import grukit  # noqa: E402
from gru_factory import random_inputs, random_model  # noqa: E402
from grukit.firmware_ref import build, c_export, measure  # noqa: E402

SIZES = [(16, 16), (16, 32), (16, 64), (16, 128), (40, 64), (1, 50)]  # (1, 50): the seed's Keras forecaster shape
STEPS = 8
TARGET_INSTRUCTIONS_PER_MAC = 2.0  # at H=64, I=16, int8, DSP path
TARGET_PER_UNIT = 80  # element-wise instructions per hidden unit at I=1, H=50 on the M4 (issue 17)
HEAD_OUTPUTS = 4
OTHER_CORES = ("mps2-an500", "mps2-an505", "mps3-an547")  # M7, M33, M55: the I=16, H=64 int8 DSP row only
NO_DSP_CORES = ("microbit", "virt")  # M0+ and RV32: the I=16, H=64 rows, both schemes, portable C


def main() -> None:
    missing = build.missing_tools()
    if missing:
        raise SystemExit(f"needs Debian packages: {', '.join(missing)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for I, H in SIZES:
            model = random_model(0, I=I, H=H, O=HEAD_OUTPUTS, layers=1, lbr=1)
            runs = [("int8", True, "mps2-an386"), ("int8", False, "mps2-an386"), ("16x8", True, "mps2-an386")]
            if (I, H) == (16, 64):
                runs += [("int8", True, m) for m in OTHER_CORES if build.emulation_unavailable_reason(m) is None]
                runs += [(scheme, False, m) for m in NO_DSP_CORES for scheme in ("int8", "16x8")
                         if build.emulation_unavailable_reason(m) is None]
            for scheme, dsp, machine in runs:
                q = grukit.quantize(model, random_inputs(0, N=16, T=20, I=I), scheme=scheme)
                build_dir = tmp / f"{I}_{H}_{scheme}_{dsp}_{machine}"
                build_dir.mkdir()
                image = measure.build_measure_image(q, build_dir, STEPS, machine=machine, dsp=dsp)
                per_step = measure.run_measure_image(image, machine)
                instructions = sum(per_step) / len(per_step)
                built = measure.built_flash_bytes(build_dir / "model" / "grukit_model.c", scheme)
                model_flash, code = built.model_bytes, built.kernel_bytes
                state, scratch = c_export.buffer_sizes(q)
                macs = 3 * H * (I + H)
                core = build.MACHINES[machine].cpu.replace("cortex-", "").replace("plus", "+").upper()
                rows.append((I, H, scheme, f"{'DSP' if dsp else 'portable'} {core}", instructions,
                             instructions / macs, code, model_flash, state + scratch))
    print("| I | H | scheme | path | instructions / step | instructions / MAC | kernel code (B) | "
          "model flash (B) | RAM state+scratch (B) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for I, H, scheme, path, ins, per_mac, code, flash, ram in rows:
        print(f"| {I} | {H} | {scheme} | {path} | {ins:,.0f} | {per_mac:.2f} | {code:,} | {flash:,} | {ram:,} |")
    target = next(r for r in rows if r[:4] == (16, 64, "int8", "DSP M4"))
    verdict = "met" if target[5] <= TARGET_INSTRUCTIONS_PER_MAC else "NOT met"
    print(f"\nTarget <= {TARGET_INSTRUCTIONS_PER_MAC} instructions/MAC at I=16, H=64 (int8, DSP): {target[5]:.2f}, "
          f"{verdict}.")
    print("\nM4, DSP path: step = a x MACs + b x H + c, least squares over the sizes above; per hidden unit at "
          "I=1, H=50 = (step - a x MACs) / H")
    print("| scheme | a: products, instructions / MAC | b: instructions / hidden unit (fit) | c | "
          "I=1, H=50: instructions / step | per hidden unit, element-wise |")
    print("|---|---|---|---|---|---|")
    for scheme in ("int8", "16x8"):
        fit = [(I, H, ins) for I, H, sc, path, ins, *_ in rows if sc == scheme and path == "DSP M4"]
        macs = np.array([3 * H * (I + H) + HEAD_OUTPUTS * H for I, H, _ in fit], float)
        hs = np.array([H for _, H, _ in fit], float)
        (a, b, c), *_ = np.linalg.lstsq(np.stack([macs, hs, np.ones_like(hs)], 1), np.array([f[2] for f in fit]),
                                       rcond=None)
        step = next(ins for I, H, ins in fit if (I, H) == (1, 50))
        per_unit = (step - a * (3 * 50 * 51 + HEAD_OUTPUTS * 50)) / 50
        print(f"| {scheme} | {a:.2f} | {b:.0f} | {c:,.0f} | {step:,.0f} | {per_unit:.0f} |")
        if scheme == "int8":
            verdict = "met" if per_unit <= TARGET_PER_UNIT else "NOT met"
            print(f"(target <= {TARGET_PER_UNIT} per hidden unit at I=1, H=50, int8: {per_unit:.0f}, {verdict})")


if __name__ == "__main__":
    main()
