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
Bit-exactness of these builds is what tests/test_firmware_gru.py checks.

    .venv/bin/python benchmarks/bench_firmware_gru.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import grukit  # noqa: E402
from gru_factory import random_inputs, random_model  # noqa: E402
from grukit.firmware_ref import build, c_export, measure  # noqa: E402

SIZES = [(16, 16), (16, 32), (16, 64), (16, 128), (40, 64)]
STEPS = 8
TARGET_INSTRUCTIONS_PER_MAC = 2.0  # at H=64, I=16, int8, DSP path
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
            model = random_model(0, I=I, H=H, O=4, layers=1, lbr=1)
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


if __name__ == "__main__":
    main()
