"""Generate grukit's embedded demo data set: 3-axis accelerometer gestures, one second at 50 Hz.

Writes grukit/data/demo_train.npz (x, y), demo_calib.npz (x), demo_val.npz (x, y) with x float32
[N, T=50, I=3] in units of g and y int64 [N]. Classes (CLASSES below):

    idle    the board lies still: gravity plus sensor noise, in a random resting orientation
    shake   a fast back-and-forth along a random axis (3-7 Hz, 0.4-1.5 g)
    circle  the board is moved in a circle in a random plane (0.8-2 Hz, 0.3-1.0 g)
    tap     one sharp decaying knock at a random moment (2-5 g peak)
    tilt    the board turns smoothly by 30-80 degrees about a random horizontal axis

Every window gets a random resting orientation, amplitude and speed, sensor noise (0.02-0.06 g) and is
rounded to 1/64 g, the step of an 8-bit accelerometer at +-2 g full scale (which also keeps the committed
.npz files small). Run:  python examples/make_demo_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SEED = 20261101
T = 50  # time steps per window
SAMPLE_RATE_HZ = 50.0
CLASSES = ("idle", "shake", "circle", "tap", "tilt")
SIZES = {"train": 640, "calib": 128, "val": 320}  # windows per split, classes balanced
LSB_G = 1.0 / 64.0  # sensor resolution, g per count
FULL_SCALE_G = 4.0  # clip like a saturating sensor range

DATA_DIR = Path(__file__).resolve().parent.parent / "grukit" / "data"


def _random_rotation(rng: np.random.Generator, max_angle_rad: float) -> np.ndarray:
    """A rotation by a random angle up to max_angle_rad about a random axis (Rodrigues' formula)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0.0, max_angle_rad)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _window(label: int, rng: np.random.Generator) -> np.ndarray:
    """One [T, 3] window of class `label` in g, before noise and rounding."""
    t = np.arange(T) / SAMPLE_RATE_HZ
    gravity = np.array([0.0, 0.0, 1.0])
    motion = np.zeros((T, 3))
    name = CLASSES[label]
    if name == "idle":
        pass
    elif name == "shake":
        f = rng.uniform(3.0, 7.0)
        amp = rng.uniform(0.4, 1.5)
        motion = amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))[:, None] * _unit(rng)
    elif name == "circle":
        f = rng.uniform(0.8, 2.0)
        amp = rng.uniform(0.3, 1.0)
        u = _unit(rng)
        v = np.cross(u, _unit(rng))
        v /= np.linalg.norm(v)
        phase = 2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)
        motion = amp * (np.cos(phase)[:, None] * u + np.sin(phase)[:, None] * v)
    elif name == "tap":
        t0 = rng.integers(5, T - 10)
        peak = rng.uniform(2.0, 5.0)
        decay_steps = rng.uniform(0.8, 2.0)
        k = np.arange(T) - t0
        # A knock is a short damped ring: a decaying oscillation starting at t0.
        ring = np.where(k >= 0, np.exp(-np.maximum(k, 0) / decay_steps) * np.cos(np.pi * 0.8 * np.maximum(k, 0)), 0.0)
        direction = np.array([0.0, 0.0, 1.0]) + 0.3 * rng.standard_normal(3)
        motion = peak * ring[:, None] * (direction / np.linalg.norm(direction))
    elif name == "tilt":
        angle = np.deg2rad(rng.uniform(30.0, 80.0)) * rng.choice([-1.0, 1.0])
        axis_angle = rng.uniform(0, 2 * np.pi)
        ax, ay = np.cos(axis_angle), np.sin(axis_angle)
        start, duration = rng.uniform(0.0, 0.4), rng.uniform(0.3, 0.6)
        s = np.clip((t - start) / duration, 0.0, 1.0)
        theta = angle * (3 * s**2 - 2 * s**3)  # smoothstep: the hand accelerates and stops
        # Gravity seen by a board rotated by theta about the horizontal axis (ax, ay, 0).
        c, sn = np.cos(theta), np.sin(theta)
        g = np.stack([ay * sn, -ax * sn, c], axis=1)
        motion = g - gravity
    rest = _random_rotation(rng, np.deg2rad(25.0))
    return (gravity + motion) @ rest.T


def make_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n windows, classes balanced and shuffled: x float32 [n, T, 3] in g, y int64 [n]."""
    y = np.arange(n, dtype=np.int64) % len(CLASSES)
    rng.shuffle(y)
    x = np.empty((n, T, 3), np.float32)
    for i, label in enumerate(y):
        clean = _window(int(label), rng)
        noisy = clean + rng.uniform(0.02, 0.06) * rng.standard_normal(clean.shape)
        counts = np.clip(np.round(noisy / LSB_G), -FULL_SCALE_G / LSB_G, FULL_SCALE_G / LSB_G - 1)
        x[i] = (counts * LSB_G).astype(np.float32)
    return x, y


def main() -> None:
    rng = np.random.default_rng(SEED)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        x, y = make_split(n, rng)
        path = DATA_DIR / f"demo_{split}.npz"
        if split == "calib":
            np.savez_compressed(path, x=x)
        else:
            np.savez_compressed(path, x=x, y=y)
        print(f"{path.name}: x {x.shape} {x.dtype}, {path.stat().st_size:,} bytes")
    info_path = DATA_DIR / "demo.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info["data"] = {
        "script": "examples/make_demo_data.py", "seed": SEED, "classes": list(CLASSES), "T": T, "I": 3,
        "sample_rate_hz": SAMPLE_RATE_HZ, "sizes": SIZES, "lsb_g": LSB_G,
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
