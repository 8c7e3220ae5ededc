"""Real recorded sequence data for the accuracy benchmark and tests: UCR/UEA archives shipped in aeon's wheel.

aeon (PyPI) bundles a few archive datasets as ``.ts`` text files under ``aeon/datasets/data``. grukit reads
those files directly; aeon is installed with ``--no-deps`` and never imported (its dependency tree is large
and nothing of it is needed). ``make test`` / ``make bench`` install it.

Datasets used:
- BasicMotions: smart-watch 3-D accelerometer + 3-D gyroscope, 10 Hz, T=100, 4 activities (UEA).
- JapaneseVowels (equal-length version): 12 LPC cepstrum coefficients of uttered vowels, T=25, 9 speakers.
- GunPoint: one hand-position coordinate over T=150 frames, 2 classes (UCR).
- Airline: monthly international airline passengers 1949-1960 (Box & Jenkins), 144 values with a strong
  trend: a forecaster calibrated on the early years sees larger inputs later.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

AEON_VERSION = "1.6.0"


class RealDataUnavailable(RuntimeError):
    pass


def aeon_data_dir() -> Path:
    spec = importlib.util.find_spec("aeon")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RealDataUnavailable(f"real datasets need the aeon wheel: pip install --no-deps aeon=={AEON_VERSION}")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse an equal-length ``.ts`` file: (x [N, T, D] float32, y [N] int64 class index, class names)."""
    labels: list[str] = []
    xs, ys = [], []
    in_data = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                parts = line.split()
                if parts[1].lower() == "true":
                    labels = parts[2:]
            elif low.startswith("@data"):
                in_data = True
            continue
        *dims, label = line.split(":")
        series = [np.array([float(v) for v in d.split(",")], np.float32) for d in dims]
        if len({len(s) for s in series}) != 1:
            raise ValueError(f"{path.name}: unequal dimension lengths")
        xs.append(np.stack(series, axis=-1))
        ys.append(labels.index(label) if labels else float(label))
    if len({x.shape for x in xs}) != 1:
        raise ValueError(f"{path.name}: sequences have different lengths; use the _eq version")
    return np.stack(xs), np.asarray(ys, np.int64), labels


def load_dataset(name: str, file_stem: str | None = None):
    """(x_train, y_train, x_test, y_test, class_names) of one bundled dataset."""
    stem = file_stem or name
    folder = aeon_data_dir() / name
    x_tr, y_tr, labels = read_ts(folder / f"{stem}_TRAIN.ts")
    x_te, y_te, _ = read_ts(folder / f"{stem}_TEST.ts")
    return x_tr, y_tr, x_te, y_te, labels


def basic_motions():
    return load_dataset("BasicMotions")


def japanese_vowels():
    return load_dataset("JapaneseVowels", "JapaneseVowels_eq")


def gun_point():
    return load_dataset("GunPoint")


def airline() -> np.ndarray:
    """The 144 monthly passenger counts (thousands), float32."""
    lines = (aeon_data_dir() / "Airline" / "Airline.csv").read_text().split()
    return np.array([float(line.split(",")[1]) for line in lines[1:]], np.float32)


def trending_forecast(T: int = 12, split: int = 96):
    """(x_train, y_train, x_test, y_test): windows of T standardized airline values and the next value,
    standardized with the first ``split`` months' mean and deviation; test windows from the later months
    (whose inputs reach values the training windows never do)."""
    s = airline()
    z = (s - s[:split].mean()) / s[:split].std()
    windows = lambda a: np.stack([a[i:i + T + 1] for i in range(len(a) - T)])[..., None]  # noqa: E731
    train, test = windows(z[:split]), windows(z[split - T:])
    return train[:, :-1], train[:, -1], test[:, :-1], test[:, -1]
