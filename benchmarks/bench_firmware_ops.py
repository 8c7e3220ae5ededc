"""Instructions per MAC of grukit_fully_connected_s8 on the emulated Cortex-M4, portable C vs DSP path.

Runs an int8 fully connected of 64 outputs x 80 inputs (the size of a GRU gate block) in QEMU's
mps2-an386 with ``-icount shift=6``, timed with SysTick (instructions = ticks x 40 / 64, see
firmware_ref/arm/board.h), once built with GRUKIT_PORTABLE_ONLY and once with the SXTB16/SMLAD loop, and
checks both outputs against the NumPy runtime. Instruction counts are measured; cycles on a real M4 differ
(loads take 1-2 cycles, taken branches 2-4, plus flash wait states) and are not claimed here.

    .venv/bin/python benchmarks/bench_firmware_ops.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import firmware_build as fb  # noqa: E402
from grukit.quantize import prepare as P  # noqa: E402
from grukit.quantize.qparams import QParams  # noqa: E402
from grukit.runtime import ops_int as K  # noqa: E402

OUTPUTS, INPUTS = 64, 80
# A second, twice as deep FC separates the dot-product loop (per MAC) from the per-output requantization.
DEEP_INPUTS = 160


def fc_case(rng, inputs: int = INPUTS):
    """One realistic int8 FC: random weights quantized per channel, random input, bias and scales."""
    input_q = QParams(0.02, 3, "int8")
    w_q, w_scales = P.quantize_weights_per_channel(rng.normal(0.0, 0.3, size=(OUTPUTS, inputs)))
    output_q = QParams(0.05, -5, "int8")
    bias = P.quantize_bias(rng.normal(0.0, 0.5, size=OUTPUTS), input_q.scale, w_scales, np.int32)
    x_q = rng.integers(-128, 128, size=(1, inputs)).astype(np.int8)
    return x_q, w_q, bias, P.prepare_fully_connected(input_q, w_scales, output_q)


def measure(dsp: bool, build_dir: Path) -> tuple[float, float]:
    """Instructions for one 64x80 and one 64x160 FC call; raises if a C output differs from NumPy's."""
    rng = np.random.default_rng(0)
    cases = [fc_case(rng, INPUTS), fc_case(rng, DEEP_INPUTS)]
    stream = fb.GoldenStream()
    indices = [fb.encode_fully_connected(stream, *case) for case in cases]
    stream.end()
    golden = stream.write_c(build_dir / f"golden_bench_{dsp}.c", "benchmarks/bench_firmware_ops.py")
    elf = fb.build_arm([fb.OPS_DRIVER_SOURCE, golden], build_dir / f"bench_{'dsp' if dsp else 'portable'}.elf",
                       dsp=dsp, defines={"DRIVER_MEASURE": None, "DRIVER_MAX_ELEMS": 16384,
                                         "DRIVER_MAX_WEIGHTS": 16384})
    stdout = fb.run_qemu(elf)
    results, ticks = fb.parse_results(stdout, stream.cases), fb.parse_ticks(stdout)
    for index, case in zip(indices, cases):
        fb.assert_same(f"fully_connected_s8 case {index}", results[index], K.fully_connected_s8(*case))
    first, deep = (fb.instructions_from_ticks(ticks[i]) for i in indices)
    return first, deep


def main() -> None:
    missing = fb.missing_arm_tools()
    if missing:
        raise SystemExit(f"needs Debian packages: {', '.join(missing)}")
    macs = OUTPUTS * INPUTS
    extra_macs = OUTPUTS * (DEEP_INPUTS - INPUTS)
    with tempfile.TemporaryDirectory() as tmp:
        for name, dsp in (("portable C", False), ("DSP (SXTB16/SMLAD)", True)):
            instructions, deep = measure(dsp, Path(tmp))
            loop = (deep - instructions) / extra_macs
            per_output = (instructions - loop * macs) / OUTPUTS
            print(f"fully_connected_s8 {OUTPUTS}x{INPUTS} {name:20s}: {instructions:7.0f} instructions = "
                  f"{instructions / macs:.2f} per MAC all in; dot-product loop {loop:.2f} per MAC, "
                  f"{per_output:.0f} per output (requantize, clamp, store); bit-exact with NumPy")


if __name__ == "__main__":
    main()
