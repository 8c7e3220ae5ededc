"""The exported C library folder (``export_c_library``, what ``grukit export --c`` and ``deploy`` write):
self-contained, built with CMake for the host (its example reproduces the NumPy runtime's integers) and for a
Cortex-M4 with its arm-none-eabi toolchain file (the library, linked into a golden-vector driver, runs in QEMU
and reproduces every state and output), and carrying the PlatformIO and Arduino manifests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import firmware_build as fb
from grukit.firmware_ref import build, c_export
from grukit.verify import assert_identical
from test_firmware_gru import GRU_DRIVER, RANDOM_MODELS, check, golden_stream, make_case

ROOT = Path(__file__).resolve().parents[1]
NAME = "grukit_model"
STRICT = "-Wall -Wextra -Wconversion -Werror"
CMAKE_TIMEOUT_S = 300


def _cmake(*args: str, cwd: Path) -> str:
    """cmake with strict warnings added through CFLAGS, as a user's environment would (CMAKE_C_FLAGS on the
    command line would replace the toolchain file's -mcpu flags instead)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed (Debian package cmake)")
    env = {**os.environ, "CFLAGS": STRICT}
    done = subprocess.run(["cmake", *args], cwd=cwd, capture_output=True, text=True, timeout=CMAKE_TIMEOUT_S,
                          env=env)
    assert done.returncode == 0, f"cmake {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _generator() -> list[str]:
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def test_library_folder_is_self_contained(tmp_path):
    case = make_case(*RANDOM_MODELS[0])
    paths = c_export.export_c_library(case.qmodel, tmp_path / "a", NAME)
    root = tmp_path / "a"
    names = {str(p.relative_to(root)) for p in paths}
    assert {"src/grukit_model.h", "src/grukit_model.c", "src/grukit_gru.h", "src/grukit_gru.c",
            "src/grukit_tables.h", "src/grukit_tables.c", "examples/main.c", "CMakeLists.txt",
            "cmake/arm-none-eabi.cmake", "library.json", "library.properties", "README.md"} == names
    firmware = build.firmware_dir()
    for relative in c_export.LIBRARY_KERNEL_FILES:  # the kernel as shipped, byte for byte
        assert (root / "src" / Path(relative).name).read_bytes() == (firmware / relative).read_bytes()
    for path in paths:  # no path back into the repository or site-packages, no template field left
        text = path.read_text()
        assert str(firmware) not in text and str(ROOT) not in text and "@GRUKIT_" not in text, path
        assert "#include" not in text or all(".." not in line and "/" not in line.split("#include", 1)[1]
                                             for line in text.splitlines() if "#include" in line), path
    again = c_export.export_c_library(case.qmodel, tmp_path / "b", NAME)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # reproducible
    manifest = json.loads((root / "library.json").read_text())
    assert manifest["name"] == NAME and manifest["build"]["srcDir"] == "src"
    properties = dict(line.split("=", 1) for line in (root / "library.properties").read_text().splitlines())
    for field in ("name", "version", "author", "maintainer", "sentence", "paragraph", "category", "url",
                  "architectures"):  # the Arduino library specification's required fields
        assert properties.get(field), field
    assert properties["includes"] == f"{NAME}.h"


def test_cmake_host_build_reproduces_the_runtime(tmp_path):
    """Configured and built as a user would (strict warnings added); the example prints the NumPy runtime's
    outputs for its samples."""
    fb.require_host_cc()
    case = make_case(*RANDOM_MODELS[1])  # int8, per-step head: one y line per step
    library = tmp_path / NAME
    c_export.export_c_library(case.qmodel, library, NAME)
    _cmake("-S", str(library), "-B", str(tmp_path / "build"), *_generator(), "-DCMAKE_BUILD_TYPE=Release",
           cwd=tmp_path)
    _cmake("--build", str(tmp_path / "build"), cwd=tmp_path)
    stdout = build.run_program([tmp_path / "build" / f"{NAME}_example"], "the library's example")
    got = np.array([[int(v) for v in line.split()[2:]] for line in stdout.splitlines() if line.startswith("y ")])
    x_q = case.qmodel.quantize_input(c_export.example_input(case.qmodel))
    assert_identical(got, case.qmodel.predict_int(x_q)[0], "CMake-built example outputs")


@pytest.mark.parametrize("spec", [RANDOM_MODELS[2], RANDOM_MODELS[7]], ids=["int8", "16x8"])
def test_cmake_cortex_m4_library_runs_in_qemu(spec, tmp_path):
    """The toolchain file builds the static library for -mcpu=cortex-m4; linked with the golden-vector driver
    and the board support, it reproduces every state and output in QEMU's mps2-an386."""
    fb.require_arm_tools("mps2-an386")
    case = make_case(*spec)
    library = tmp_path / NAME
    c_export.export_c_library(case.qmodel, library, NAME)
    _cmake("-S", str(library), "-B", str(tmp_path / "build"), *_generator(), "-DCMAKE_BUILD_TYPE=Release",
           f"-DCMAKE_TOOLCHAIN_FILE={library / 'cmake' / 'arm-none-eabi.cmake'}", "-DGRUKIT_CPU=cortex-m4",
           "-DGRUKIT_ARM_FLAGS=-mfloat-abi=hard -mfpu=fpv4-sp-d16", cwd=tmp_path)
    _cmake("--build", str(tmp_path / "build"), cwd=tmp_path)
    archive = tmp_path / "build" / f"lib{NAME}.a"
    golden_c = golden_stream(case).write_c(tmp_path / "golden.c", "tests/test_firmware_library.py (NumPy runtime)")
    elf = build.build_arm([GRU_DRIVER, fb.GOLDEN_STREAM_SOURCE, golden_c, archive], tmp_path / "gru.elf",
                          machine="mps2-an386",
                          defines={"GRUKIT_MODEL_HEADER": f'"{library / "src" / "grukit_model.h"}"'})
    check(case, fb.run_qemu(elf, machine="mps2-an386"))
