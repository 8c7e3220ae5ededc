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
Then the step split, on the M4 (both schemes, both int8 forms), the M55 (Helium, both schemes), the M0+ and
RV32: the gates'
element-wise ops (ADD / SUB / MUL, their requantizations, the LOGISTIC / TANH lookups) measured between the
kernel's phase marks in a profile build (GRUKIT_PROFILE_MARK, the marks' own instructions removed), per hidden
unit, and the rest of the step (the products with their row requantizations, the widening, the head) per MAC;
issue 17's targets: at most 80 element-wise instructions per hidden unit at I=1, H=50 and 1.5 instructions per
MAC for the whole int8 step at I=16, H=64, on the M4.
Then the C constants' two forms (grukit export --c --optimize speed|size) of both schemes at every size on the
M4 (DSP path) and, at I=16, H=64, on the M55 (the size form on its Helium path, the speed form on the DSP path;
both schemes), the M0+ and RV32 (int8): model flash and instructions per step side by side, each form's kernel
built for that form only (-DGRUKIT_FORM_SPEED_ONLY / _SIZE_ONLY, as the generated library builds it); issue 17's
Helium targets (int8 at most 0.5 instructions per MAC, 16x8 at most 0.8, at I=16, H=64); and its flash target for
the int8 size form: model constants at most 1.3 x the weight bytes + 2 KB per GRU layer, at the seed forecaster's
shape.
Bit-exactness of these builds is what tests/test_firmware_gru.py and tests/test_firmware_size.py check.

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
TARGET_M4_PER_MAC = 1.5  # int8 at I=16, H=64 on the M4, whole step (issue 17)
SIZE_TARGET_RATIO, SIZE_TARGET_PER_LAYER = 1.3, 2048  # size form: model flash <= 1.3 x weight bytes + 2 KB / layer
HEAD_OUTPUTS = 4
OTHER_CORES = ("mps2-an500", "mps2-an505", "mps3-an547")  # M7, M33, M55: the I=16, H=64 int8 DSP row only
NO_DSP_CORES = ("microbit", "virt")  # M0+ and RV32: the I=16, H=64 rows, both schemes, portable C
HELIUM_CORE = "mps3-an547"  # the M55: the size form runs its Helium (MVE) path there, the speed form the DSP one
TARGET_HELIUM_PER_MAC = {"int8": 0.5, "16x8": 0.8}  # at I=16, H=64 on the M55 with Helium (issue 17)


def main() -> None:
    missing = build.missing_tools()
    if missing:
        raise SystemExit(f"needs Debian packages: {', '.join(missing)}")
    rows, form_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for I, H in SIZES:
            model = random_model(0, I=I, H=H, O=HEAD_OUTPUTS, layers=1, lbr=1)
            runs = [("int8", True, "mps2-an386"), ("int8", False, "mps2-an386"), ("16x8", True, "mps2-an386")]
            if (I, H) == (16, 64):
                runs += [("int8", True, m) for m in OTHER_CORES if build.emulation_unavailable_reason(m) is None]
                runs += [(scheme, False, m) for m in NO_DSP_CORES for scheme in ("int8", "16x8")
                         if build.emulation_unavailable_reason(m) is None]
            forms = [(scheme, True, "mps2-an386") for scheme in ("int8", "16x8")]
            if (I, H) == (16, 64):
                forms += [(scheme, True, HELIUM_CORE) for scheme in ("int8", "16x8")
                          if build.emulation_unavailable_reason(HELIUM_CORE) is None]
                forms += [("int8", False, m) for m in NO_DSP_CORES if build.emulation_unavailable_reason(m) is None]
            if (I, H) == (1, 50) and build.emulation_unavailable_reason(HELIUM_CORE) is None:
                forms.append(("int8", True, HELIUM_CORE))  # the seed's shape: depths 1 and 50 on Helium
            quantized = {scheme: grukit.quantize(model, random_inputs(0, N=16, T=20, I=I), scheme=scheme)
                         for scheme in ("int8", "16x8")}
            for scheme, dsp, machine in runs:
                rows.append(_measure(quantized[scheme], tmp, I, H, dsp, machine, "speed"))
            for scheme, dsp, machine in forms:
                speed = next((r for r in rows if r[:4] == (I, H, scheme, _path(dsp, machine))), None)
                if speed is None:  # not in the main table (16x8 on the M55): measured here
                    speed = _measure(quantized[scheme], tmp, I, H, dsp, machine, "speed")
                size = _measure(quantized[scheme], tmp, I, H, dsp, machine, "size")
                weights = sum(np.asarray(fc.w_q).size for layer in quantized[scheme].layers
                              for fc in layer.fcs.values()) + sum(np.asarray(d.fc.w_q).size
                                                                  for d in quantized[scheme].head.layers)
                form_rows.append((I, H, scheme, speed[3] if speed[3] == size[3] else f"{speed[3]} / {size[3]}",
                                  weights, speed, size))
    _print_forms(form_rows)
    print("\n| I | H | scheme | path | instructions / step | instructions / MAC | kernel code (B) | "
          "model flash (B) | RAM state+scratch (B) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for I, H, scheme, path, ins, per_mac, code, flash, ram, _ in rows:
        print(f"| {I} | {H} | {scheme} | {path} | {ins:,.0f} | {per_mac:.2f} | {code:,} | {flash:,} | {ram:,} |")
    target = next(r for r in rows if r[:4] == (16, 64, "int8", "DSP M4"))
    verdict = "met" if target[5] <= TARGET_INSTRUCTIONS_PER_MAC else "NOT met"
    print(f"\nTarget <= {TARGET_INSTRUCTIONS_PER_MAC} instructions/MAC at I=16, H=64 (int8, DSP): {target[5]:.2f}, "
          f"{verdict}.")
    units = _print_units(rows)
    m4 = next(u for u in units if u[:4] == ("int8", "speed", "DSP M4", 1))
    verdict = "met" if m4[6] <= TARGET_PER_UNIT else "NOT met"
    print(f"\nTarget <= {TARGET_PER_UNIT} element-wise instructions per hidden unit at I=1, H=50 (int8, M4): "
          f"{m4[6]:.0f}, {verdict}.")
    per_mac = target[5]
    verdict = "met" if per_mac <= TARGET_M4_PER_MAC else "NOT met"
    print(f"Target <= {TARGET_M4_PER_MAC} instructions/MAC at I=16, H=64 (int8, M4, whole step): {per_mac:.2f}, "
          f"{verdict}.")


# (scheme, form, dsp, machine, I, H): where the element-wise ops' share of a step is measured.
UNIT_RUNS = [("int8", "speed", True, "mps2-an386", 1, 50), ("int8", "speed", True, "mps2-an386", 16, 64),
             ("16x8", "speed", True, "mps2-an386", 16, 64), ("int8", "size", True, "mps2-an386", 16, 64),
             ("int8", "size", True, HELIUM_CORE, 16, 64), ("16x8", "size", True, HELIUM_CORE, 16, 64),
             ("int8", "speed", False, "microbit", 16, 64), ("int8", "speed", False, "virt", 16, 64)]


def _print_units(rows: list) -> list[tuple]:
    """Each step of UNIT_RUNS split into the gates' element-wise ops, measured between the kernel's phase marks
    in a profile build (GRUKIT_PROFILE_MARK; the marks' own instructions removed), and the rest (products with
    their requantizations, widening, the head), from the unprofiled step of the table above."""
    print("\nThe step split (profile build: the kernel's phase marks around the gates' element-wise ops):")
    print("| scheme | form | path | I | H | instructions / step | element-wise / hidden unit | rest / MAC |")
    print("|---|---|---|---|---|---|---|---|")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (scheme, form, dsp, machine, I, H) in enumerate(UNIT_RUNS):
            if build.emulation_unavailable_reason(machine) is not None:
                continue
            q = grukit.quantize(random_model(0, I=I, H=H, O=HEAD_OUTPUTS, layers=1, lbr=1),
                                random_inputs(0, N=16, T=20, I=I), scheme=scheme)
            build_dir = Path(tmp) / str(n)
            build_dir.mkdir()
            elf = measure.build_measure_image(q, build_dir, STEPS, machine=machine, dsp=dsp, optimize=form,
                                              profile=True)
            units = float(np.mean(measure.run_measure_image(elf, machine, "UNITS")))
            path = _path(dsp, machine, form)
            step = next((r[4] for r in rows if r[:4] == (I, H, scheme, path) and r[9] == form), None)
            if step is None:  # not in the table above: measured here, unprofiled
                step = _measure(q, Path(tmp), I, H, dsp, machine, form)[4]
            out.append((scheme, form, path, I, H, step, units / H))
            print(f"| {scheme} | {form} | {path} | {I} | {H} | {step:,.0f} | {units / H:.0f} | "
                  f"{(step - units) / (3 * H * (I + H)):.2f} |")
    return out


def _path(dsp: bool, machine: str, optimize: str = "speed") -> str:
    core = build.MACHINES[machine].cpu.replace("cortex-", "").replace("plus", "+").upper()
    helium = dsp and optimize == "size" and machine == HELIUM_CORE
    return f"{'Helium' if helium else 'DSP' if dsp else 'portable'} {core}"


def _measure(q, tmp: Path, I: int, H: int, dsp: bool, machine: str, optimize: str) -> tuple:
    """(I, H, scheme, path, instructions / step, / MAC, kernel code, model flash, RAM, optimize) of one build."""
    scheme = str(q.scheme)
    build_dir = tmp / f"{I}_{H}_{scheme}_{dsp}_{machine}_{optimize}"
    build_dir.mkdir()
    image = measure.build_measure_image(q, build_dir, STEPS, machine=machine, dsp=dsp, optimize=optimize)
    per_step = measure.run_measure_image(image, machine)
    instructions = sum(per_step) / len(per_step)
    built = measure.built_flash_bytes(build_dir / "model" / "grukit_model.c", scheme, optimize=optimize)
    state, scratch = c_export.buffer_sizes(q)
    return (I, H, scheme, _path(dsp, machine, optimize), instructions, instructions / (3 * H * (I + H)), built.kernel_bytes,
            built.model_bytes, state + scratch, optimize)


def _print_forms(form_rows: list) -> None:
    """The speed and size forms side by side, the Helium targets, and the int8 size form's flash target at I=1,
    H=50."""
    print("C constants, --optimize speed vs size (model flash and kernel code: the Cortex-M4 build of each "
          "form alone)")
    print("| I | H | scheme | path | weights (B) | model flash speed / size (B) | kernel code speed / size (B) | "
          "instructions / step speed / size | size / speed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for I, H, scheme, path, weights, speed, size in form_rows:
        print(f"| {I} | {H} | {scheme} | {path} | {weights:,} | {speed[7]:,} / {size[7]:,} | {speed[6]:,} / "
              f"{size[6]:,} | {speed[4]:,.0f} / {size[4]:,.0f} | {size[4] / speed[4]:.2f}x |")
    for scheme, target in TARGET_HELIUM_PER_MAC.items():
        helium = next((r for r in form_rows if r[:3] == (16, 64, scheme) and "Helium" in r[3]), None)
        if helium is not None:
            per_mac = helium[6][5]
            verdict = "met" if per_mac <= target else "NOT met"
            print(f"\nCortex-M55, Helium (size form), {scheme} at I=16, H=64: {per_mac:.2f} instructions / MAC (DSP "
                  f"path, speed form: {helium[5][5]:.2f}); target <= {target}: {verdict}.")
    I, H, scheme, path, weights, speed, size = next(r for r in form_rows if r[:3] == (1, 50, "int8"))
    limit = SIZE_TARGET_RATIO * weights + SIZE_TARGET_PER_LAYER
    verdict = "met" if size[7] <= limit else "NOT met"
    print(f"\nint8 size form at I=1, H=50: model flash {size[7]:,} B for {weights:,} weight bytes; target <= "
          f"{SIZE_TARGET_RATIO} x {weights:,} + {SIZE_TARGET_PER_LAYER:,} = {limit:,.0f} B: {verdict}. Instructions "
          f"per step {size[4]:,.0f} (speed form {speed[4]:,.0f}).\n")


if __name__ == "__main__":
    main()
