"""grukit as a user installs it: ``python -m build`` makes an sdist and a wheel that carry everything grukit reads
at run time, and the wheel, installed into a fresh venv outside the repository, runs ``grukit demo`` to the
end, the C kernel bit-exact and flash measured, without torch.

Offline and quick: the build uses the test environment's setuptools (``--no-isolation``), and the fresh venv
gets only the wheel (``--no-deps --no-index``), its dependencies coming from the test environment's
site-packages through a .pth file placed after its own; torch is made unimportable there, as on a machine
without the ``grukit[torch]`` extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import grukit
from grukit.firmware_ref import build

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
# What grukit reads at run time, by path inside the wheel (the sdist has them under their repository folders).
RUNTIME_FILES = [
    "grukit/data/demo_model.onnx", "grukit/data/demo_calib.npz", "grukit/data/demo_val.npz", "grukit/data/demo.json",
    "grukit/runtime/targets/stm32l476.toml", "grukit/firmware_ref/include/grukit_gru.h",
    "grukit/firmware_ref/src/grukit_gru.c", "grukit/firmware_ref/src/grukit_tables.c",
    "grukit/firmware_ref/src/grukit_tables.h", "grukit/firmware_ref/test/host_runner.c",
    "grukit/firmware_ref/test/gru_driver.c", "grukit/firmware_ref/test/golden_stream.c",
    "grukit/firmware_ref/arm/startup.c", "grukit/firmware_ref/arm/mps2_an386.ld",
    "grukit/firmware_ref/library/CMakeLists.txt", "grukit/firmware_ref/library/arm-none-eabi.cmake",
]


def _run(cmd: list, cwd: Path, what: str) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _source_tree(dest: Path) -> Path:
    """The repository's files (tracked, and new ones git does not ignore) copied to dest: what a clone holds."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell the repository's files from build leftovers")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())
    return dest


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("package")
    source = _source_tree(tmp / "source")
    _run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", tmp / "dist", source],
         tmp, "python -m build")
    return tmp / "dist"


def test_sdist_and_wheel_carry_the_runtime_files(dist):
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    assert wheel.name == f"grukit-{grukit.__version__}-py3-none-any.whl"
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert not [f for f in RUNTIME_FILES if f not in in_wheel]
    top = f"grukit-{grukit.__version__}/"
    in_sdist = {name.removeprefix(top) for name in tarfile.open(sdist).getnames()}
    repository_paths = [f.replace("grukit/firmware_ref/", "firmware_ref/").replace("grukit/runtime/", "runtime/")
                        for f in RUNTIME_FILES]
    assert not [f for f in repository_paths if f not in in_sdist]
    print(f"wheel {wheel.stat().st_size:,} bytes, sdist {sdist.stat().st_size:,} bytes")


def test_the_installed_wheel_runs_the_demo_without_torch(dist, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, "python -m venv")
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel], tmp_path, "pip install")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                     "site-packages").strip())
    (site / "zz_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "zz_without_torch.pth").write_text("import sys; sys.modules['torch'] = None\n")
    run_dir = tmp_path / "elsewhere"  # nowhere near the repository
    run_dir.mkdir()
    where = _run([python, "-c", "import grukit; print(grukit.__file__)"], run_dir, "import grukit")
    assert where.startswith(str(site)), where  # the wheel's grukit, not the repository's
    assert _run([venv / "bin" / "grukit", "--version"], run_dir, "grukit --version").strip() == \
        f"grukit {grukit.__version__}"
    _run([venv / "bin" / "grukit", "demo", "--out", "demo"], run_dir, "grukit demo")
    report = json.loads((run_dir / "demo" / "report.json").read_text())
    assert report["pass"] and report["bit_exact"]["tflite-micro"] is True
    if build.toolchain_status()["host_ok"]:
        assert report["bit_exact"]["c-kernel"] is True, report["bit_exact_detail"]
    if not build.missing_tools():
        flash = next(t for t in report["targets"] if t["name"].endswith(" flash"))
        assert flash["estimate"] is False and flash["note"].startswith("measured"), flash
    assert (run_dir / "demo" / "grukit_model" / "CMakeLists.txt").is_file()
