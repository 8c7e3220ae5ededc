"""What ``grukit deploy`` and ``grukit export`` read besides the model: calibration and validation data.

Sequences are ``.npz`` files (array ``x`` [N, T, I], and ``y`` for validation) or arrays. The task follows
from ``y``: integer labels [N] or [N, T] are classification, float targets [N, O] or [N, T, O] regression.
Everything is checked before any work is done; a problem is a BadInputError naming the file and the array.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np

from grukit.core.errors import BadInputError, GrukitError
from grukit.core.limits import MAX_DATA_BYTES, check_archive, check_file_size
from grukit.core.model import GRUModel

TASKS = ("classification", "regression")


def _read_npz(path: Path, keys: tuple[str, ...], what: str) -> list[np.ndarray]:
    if not path.is_file():
        raise BadInputError(f"{what} {path}: no such file")
    check_file_size(path, MAX_DATA_BYTES, "data")
    check_archive(path, MAX_DATA_BYTES, "data")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise BadInputError(f"{what} {path}: no array {missing[0]!r} (it holds {', '.join(npz.files) or 'nothing'})")
            return [npz[k] for k in keys]
    except GrukitError:
        raise
    except Exception as e:  # zipfile / pickle / format errors all mean the same thing to the user
        raise BadInputError(f"{what} {path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def data_name(what: str, source) -> str:
    """How errors name a data set: "calibration data calib.npz" for a file, "calibration data" for an array."""
    return f"{what} {source}" if isinstance(source, (str, Path)) else what


def load_x(source, what: str, input_size: int) -> np.ndarray:
    """Sequences x float32 [N, T, I] from a .npz path (array 'x') or an array."""
    if isinstance(source, (str, Path)):
        (x,) = _read_npz(Path(source), ("x",), what)
    else:
        x = np.asarray(source)
    what = data_name(what, source)
    if x.ndim != 3 or x.shape[2] != input_size or x.shape[0] == 0 or x.shape[1] == 0:
        raise BadInputError(f"{what}: x must have shape [N, T, {input_size}] with N, T > 0, got {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise BadInputError(f"{what}: x must be finite numbers")
    return x.astype(np.float32)


def load_xy(source, what: str, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x [N, T, I], y) from a .npz path (arrays 'x' and 'y') or an (x, y) pair."""
    if isinstance(source, (str, Path)):
        x, y = _read_npz(Path(source), ("x", "y"), what)
    else:
        x, y = source
    x = load_x(x, data_name(what, source), input_size)
    what = data_name(what, source)
    y = np.asarray(y)
    if y.shape[:1] != x.shape[:1]:
        raise BadInputError(f"{what}: y has {y.shape[0] if y.ndim else 0} rows but x has {x.shape[0]}")
    return x, y


def infer_task(y: np.ndarray, task: str | None = None, what: str = "y") -> str:
    """"classification" for integer labels [N] / [N, T], "regression" for float targets [N, O] / [N, T, O].
    what: how errors name the data (``data_name``)."""
    if task is not None:
        if task not in TASKS:
            raise BadInputError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
        return task
    if np.issubdtype(y.dtype, np.integer) and y.ndim in (1, 2):
        return "classification"
    if np.issubdtype(y.dtype, np.floating) and y.ndim in (2, 3):
        return "regression"
    raise BadInputError(
        f"{what}: cannot tell the task from y of dtype {y.dtype} and shape {list(y.shape)}: give integer labels [N] or "
        "[N, T] (classification) or float targets [N, O] or [N, T, O] (regression), or pass --task"
    )


def check_targets(task: str, y: np.ndarray, model: GRUModel, T: int, what: str = "y") -> np.ndarray:
    """y in the form the scorer expects, or a BadInputError (naming the data: ``data_name``) saying what does
    not match the model."""
    O = model.output_size
    if task == "classification":
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise BadInputError(f"{what}: task classification needs integer class labels in y")
        y = y.astype(np.int64)
        want = (y.shape[0], T) if model.per_step else (y.shape[0],)
        classes = max(O, 2)
        if y.shape != want:
            raise BadInputError(f"{what}: labels y must have shape {list(want)} for this model, got {list(y.shape)}")
        if y.min() < 0 or y.max() >= classes:
            raise BadInputError(f"{what}: labels must be in [0, {classes - 1}] for a model with {O} output(s); "
                                f"y holds {y.min()}..{y.max()}")
        return y
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
        raise BadInputError(f"{what}: regression targets y must be finite numbers")
    y = y.astype(np.float32)
    if y.ndim == 1:
        y = y[:, None]
    want = (y.shape[0], T, O) if model.per_step else (y.shape[0], O)
    if y.shape != want:
        raise BadInputError(f"{what}: regression targets y must have shape {list(want)} for this model, got {list(y.shape)}")
    return y


def load_input_range(source, input_size: int) -> tuple[list[float], list[float]] | None:
    """The input's declared range (``--input-range``): "LO:HI" for every channel, or a .json / .toml file with
    ``lo`` and ``hi`` (a number, or a list with one per input channel); or a (lo, hi) pair. None stays None."""
    if source is None:
        return None
    if isinstance(source, (tuple, list)) and len(source) == 2:
        lo, hi = source
    elif isinstance(source, (str, Path)) and Path(source).suffix.lower() in (".json", ".toml"):
        path = Path(source)
        if not path.is_file():
            raise BadInputError(f"input range {path}: no such file")
        try:
            table = (json.loads(path.read_text()) if path.suffix.lower() == ".json"
                     else tomllib.loads(path.read_text()))
        except (ValueError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise BadInputError(f"input range {path}: not readable ({e})") from None
        if not isinstance(table, dict) or not {"lo", "hi"} <= table.keys():
            raise BadInputError(f"input range {path}: needs the keys lo and hi (a number or one per input channel)")
        lo, hi = table["lo"], table["hi"]
    else:
        parts = str(source).split(":")
        try:
            lo, hi = (float(v) for v in parts)
        except ValueError:
            raise BadInputError(f"--input-range takes LO:HI (e.g. --input-range=-4:4) or a .json / .toml file with "
                                f"lo and hi; got {source!r}") from None
    try:
        lo, hi = (np.broadcast_to(np.asarray(v, np.float64), (input_size,)) for v in (lo, hi))
    except (TypeError, ValueError):
        raise BadInputError(f"input range: lo and hi must each be a number or {input_size} numbers (one per input "
                            "channel)") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(hi <= lo):
        raise BadInputError(f"input range: needs finite lo < hi on every channel; got lo {lo.tolist()}, "
                            f"hi {hi.tolist()}")
    return lo.tolist(), hi.tolist()
