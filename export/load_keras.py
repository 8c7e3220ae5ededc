"""Load a Keras 3 ``.keras`` file (a zip of ``config.json`` and ``model.weights.h5``) without Keras.

Only ``zipfile``, ``json`` and ``h5py`` are needed, so a user without TensorFlow (or Keras) can load the
model. Understood: a ``Sequential`` of an optional ``InputLayer``, ``GRU`` layers (Keras gate order z, r, h,
the same as grukit's; ``reset_after=True`` is ``linear_before_reset=1`` with a (2, 3H) bias = input and
recurrent, ``reset_after=False`` is ``0`` with a (3H,) input bias), optional ``Dropout`` (a no-op at
inference), and at most one final ``Dense`` with activation linear, softmax or sigmoid. Anything else is
refused by name. Where Keras is importable the file is also run through Keras (``source_runtime``: the torch
backend unless KERAS_BACKEND names another) and compared.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import h5py

from grukit.core.errors import BadInputError, MissingDependencyError, UnsupportedModelError
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import FrameworkUnavailable, run_source
from grukit.core.model import HEAD_ACTIVATIONS, Dense, GRUDirection, GRULayer, GRUModel

# Sequence length of the self check when the file does not fix one.
FREE_TIME = 7

# GRU config entries that must hold these values for grukit to compute the same function.
GRU_REQUIRED = {"activation": "tanh", "recurrent_activation": "sigmoid", "go_backwards": False,
                "return_state": False, "stateful": False}


def load_keras(path, name: str | None = None, self_check: bool | None = None) -> GRUModel:
    """Read a Keras 3 Sequential GRU model. self_check: True runs Keras and refuses on a mismatch (Keras
    must be importable), False skips it, None runs it only where Keras can be imported."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            weights_bytes = z.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise BadInputError(f"{path}: not a Keras 3 .keras archive ({e})") from e
    with h5py.File(io.BytesIO(weights_bytes), "r") as h5:
        model, time_steps = _read_model(config, h5, name or path.stem, str(path))
    if self_check is not False:
        _self_check(path, model, time_steps, required=bool(self_check))
    return model


def _read_model(config: dict, h5, name: str, source: str) -> tuple[GRUModel, int | None]:
    if config.get("class_name") != "Sequential":
        raise UnsupportedModelError(
            f"Keras model class {config.get('class_name')!r} is not supported (grukit reads a Sequential)"
        )
    specs = config["config"]["layers"]
    layers, head, time_steps = [], None, None
    seq_open = True  # whether the previous GRU returned every step
    used_keys: dict[str, int] = {}
    for k, spec in enumerate(specs):
        cls, cfg = spec["class_name"], spec["config"]
        where = f"Keras layer {cfg.get('name', k)!r} ({cls})"
        if head is not None:
            raise UnsupportedModelError(f"{where} after the Dense head is not supported")
        if cls == "InputLayer":
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if shape is not None and len(shape) == 3:
                time_steps = shape[1]
            continue
        # model.weights.h5 files layers by class name in order (gru, gru_1, ...), not by layer name.
        key = _h5_key({"GRU": "gru", "Dense": "dense", "Dropout": "dropout"}.get(cls, cls), used_keys)
        if cls == "Dropout":
            continue  # identity at inference
        if cls == "GRU":
            if not seq_open:
                raise UnsupportedModelError(f"{where} follows a GRU with return_sequences=False")
            layers.append(_gru(cfg, _vars(h5, key, where), where))
            seq_open = bool(cfg.get("return_sequences", False))
            if time_steps is None:
                bshape = spec.get("build_config", {}).get("input_shape")
                time_steps = bshape[1] if bshape and len(bshape) == 3 else None
            continue
        if cls == "Dense":
            if not layers:
                raise UnsupportedModelError(f"{where} comes before any GRU")
            head = _dense(cfg, _vars(h5, key, where), per_step=seq_open, where=where)
            continue
        raise UnsupportedModelError(f"{where}: Keras layer type {cls!r} is not supported")
    if not layers:
        raise UnsupportedModelError("the Keras model holds no GRU layer")
    if head is None and seq_open:
        raise UnsupportedModelError("the last GRU returns every step (return_sequences=True) without a Dense "
                                    "head; grukit's model without a head outputs the last step")
    return GRUModel(layers=tuple(layers), head=head, name=name, source=source), time_steps


def _h5_key(snake_name: str, used: dict[str, int]) -> str:
    """The group Keras 3 saves a Sequential's k-th layer of a class under: name, name_1, name_2, ..."""
    if snake_name in used:
        used[snake_name] += 1
        return f"{snake_name}_{used[snake_name]}"
    used[snake_name] = 0
    return snake_name


def _vars(h5, layer_name: str, where: str) -> list[np.ndarray]:
    for group in (f"layers/{layer_name}/cell/vars", f"layers/{layer_name}/vars"):
        if group in h5 and len(h5[group]):
            g = h5[group]
            return [np.asarray(g[str(i)], np.float32) for i in range(len(g))]
    raise BadInputError(f"{where}: no weights under layers/{layer_name} in model.weights.h5")


def _gru(cfg: dict, weights: list[np.ndarray], where: str) -> GRULayer:
    for key, value in GRU_REQUIRED.items():
        if cfg.get(key, value) != value:
            raise UnsupportedModelError(f"{where}: {key}={cfg[key]!r} is not supported (grukit needs {value!r})")
    # dropout / recurrent_dropout act only in training, so they do not change the function to compile.
    H = int(cfg["units"])
    use_bias = bool(cfg.get("use_bias", True))
    reset_after = bool(cfg.get("reset_after", True))
    if len(weights) != (3 if use_bias else 2):
        raise BadInputError(f"{where}: {len(weights)} weight arrays, expected {3 if use_bias else 2}")
    kernel, recurrent = weights[0], weights[1]  # [I, 3H], [H, 3H]; columns z, r, h
    if kernel.ndim != 2 or kernel.shape[1] != 3 * H or recurrent.shape != (H, 3 * H):
        raise BadInputError(f"{where}: kernel {kernel.shape} / recurrent kernel {recurrent.shape} for {H} units")
    W = kernel.T.reshape(3, H, -1)
    R = recurrent.T.reshape(3, H, H)
    Wb = np.zeros((3, H), np.float32)
    Rb = np.zeros((3, H), np.float32)
    if use_bias:
        bias = weights[2]
        if reset_after:
            if bias.shape != (2, 3 * H):
                raise BadInputError(f"{where}: reset_after bias has shape {bias.shape}, expected (2, {3 * H})")
            Wb, Rb = bias[0].reshape(3, H), bias[1].reshape(3, H)
        else:
            if bias.shape != (3 * H,):
                raise BadInputError(f"{where}: bias has shape {bias.shape}, expected ({3 * H},)")
            Wb = bias.reshape(3, H)
    return GRULayer(forward=GRUDirection(W=W, R=R, Wb=Wb, Rb=Rb), linear_before_reset=1 if reset_after else 0)


def _dense(cfg: dict, weights: list[np.ndarray], per_step: bool, where: str) -> Dense:
    activation = cfg.get("activation", "linear")
    if activation is None:
        activation = "linear"
    if not isinstance(activation, str) or activation not in HEAD_ACTIVATIONS:
        raise UnsupportedModelError(f"{where}: activation {activation!r} is not supported; use one of {HEAD_ACTIVATIONS}")
    kernel = weights[0]  # [F, O]
    bias = weights[1] if cfg.get("use_bias", True) else np.zeros(kernel.shape[1], np.float32)
    return Dense(W=kernel.T, b=bias, per_step=per_step, activation=activation)


def _self_check(path: Path, model: GRUModel, time_steps: int | None, required: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, time_steps or FREE_TIME, model.input_size)).astype(np.float32)
    try:
        got, _ = run_source(path, model, x)
    except FrameworkUnavailable as e:  # Keras is not importable
        if required:
            raise MissingDependencyError(f"{path}: the load-time check needs Keras: {e}") from e
        model.meta["self_check"] = "skipped: Keras is not importable, so Keras did not confirm what was read"
        warnings.warn(f"{path}: {model.meta['self_check']}", stacklevel=3)
        return
    require_agreement(got, model.predict(x), f"{path}: Keras", "what the model computes")
    model.meta["self_check"] = "keras"
