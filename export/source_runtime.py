"""Run a user's source model in its own framework: the one place grukit does so.

The loaders' load-time self checks and ``grukit deploy``'s "framework" score both come through here, so the
model the loader checked is the model the report scores. Every runner takes x [N, T, I] batch-first float32
and returns the source's output batch-first, with who ran it:

    .onnx      onnxruntime; ONNX's reference evaluator when a GRU has layout=1 (onnxruntime's CPU kernel
               does not implement it)
    .pt2       the torch.export program's module; a program exported with a fixed batch runs in chunks of
               it (the last one padded), a fixed T other than x's is refused with the reason
    .keras     Keras 3 (on the torch backend unless the caller chose one); unavailable without Keras
    nn.Module  the module in eval mode, its training mode restored afterwards

The loaders record in ``model.meta`` what running needs: ``input_layout`` ("batch_first" or "time_major",
how the source takes its input) and ``output_axes`` (one label per axis of the source's raw output: batch
N, time T, feature F, and the size-1 direction D / unit 1 / kept last step T1, which are dropped).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx.external_data_helper import load_external_data_for_model
from onnx.reference import ReferenceEvaluator

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.model import GRUModel

# Size-1 axes of a raw output that are layout only: a GRU's single direction, an unsqueezed unit axis, the
# last time step kept as an axis of 1.
LAYOUT_ONLY_AXES = ("D", "1", "T1")
# Sequences per Keras predict call: large enough that the Python overhead per batch does not dominate.
KERAS_BATCH = 256


class FrameworkUnavailable(Exception):
    """The source framework cannot run here (not importable, no runnable form): the reason, for the report."""


def run_source(source, model: GRUModel, x: np.ndarray) -> tuple[np.ndarray, str]:
    """(the source model's output on x [N, T, I] float32, batch first; which framework ran it).

    source: a path to a .onnx / .pt2 / .keras file, a torch ``ExportedProgram`` or a ``torch.nn.Module``;
    model: what a grukit loader read from it (its ``meta`` says how the source lays out input and output).
    Raises FrameworkUnavailable with the reason when the source cannot run here.
    """
    if isinstance(source, GRUModel):
        raise FrameworkUnavailable("the model was given as a grukit GRUModel: there is no source framework")
    if isinstance(source, (str, Path)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return run_onnx_file(path, model, x)
        if suffix == ".pt2":
            return run_exported_program(read_exported_program(path), model, x)
        if suffix == ".keras":
            return run_keras_file(path, x)
        raise BadInputError(f"{path}: no framework runs {suffix!r} files; grukit reads .onnx, .pt2, .keras")
    import torch  # optional (see above)

    if isinstance(source, torch.export.ExportedProgram):
        return run_exported_program(source, model, x)
    layout = model.meta.get("input_layout")
    out = run_torch_module(source, to_input_layout(x, layout))
    return to_batch_first(out, model.meta.get("output_axes")), f"torch {torch.__version__} (nn.Module)"


# torch.load's own switch: when set, every torch.load is weights_only=True whatever its caller asked for.
TORCH_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
TORCH_NOT_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def read_exported_program(path: Path):
    """``torch.export.load(path)``, without running code from the file and without torch's log noise.

    torch.export.load unpickles parts of the archive with ``weights_only=False``: its sample inputs (after a
    failed ``weights_only=True`` try) and any weight stored as a pickle. A crafted .pt2 would run its code
    there. Under TORCH_FORCE_WEIGHTS_ONLY_LOAD every torch.load in the call is ``weights_only=True`` (tensors,
    containers and plain values only), so such a file is refused instead. The variable is set for the call
    and restored after it (the process's environment: not meant for threads loading .pt2 files at once).
    A file torch cannot read is a BadInputError naming it; the warning torch logs on the way (a traceback)
    is kept off the terminal."""
    import torch  # optional (grukit[torch]): only .pt2 and nn.Module sources need it

    try:
        with _weights_only_torch_load(), _quiet("torch.export"):
            return torch.export.load(str(path))
    except Exception as e:  # torch raises assorted errors for a file that is not an exported program
        raise BadInputError(f"{path}: cannot read a torch.export program ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from e


@contextmanager
def _weights_only_torch_load():
    saved = {k: os.environ.pop(k, None) for k in (TORCH_WEIGHTS_ONLY, TORCH_NOT_WEIGHTS_ONLY)}
    os.environ[TORCH_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        os.environ.pop(TORCH_WEIGHTS_ONLY)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


@contextmanager
def _quiet(logger: str):
    """A framework's warnings (its logger's and Python's) kept off the terminal for the call: grukit reports
    what went wrong itself."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def source_meta(batch_first: bool, output_axes) -> dict:
    """The ``model.meta`` entries a loader records for running its source here (see the module docstring)."""
    return {"input_layout": "batch_first" if batch_first else "time_major", "output_axes": output_axes}


def to_input_layout(x: np.ndarray, layout: str | None) -> np.ndarray:
    """x [N, T, I] as the source takes it: unchanged, or [T, N, I] for layout "time_major"."""
    return np.ascontiguousarray(x.transpose(1, 0, 2)) if layout == "time_major" else x


# The output layouts ``to_batch_first`` lays out (size-1 layout-only axes dropped): last step, every step.
OUTPUT_LAYOUTS = (("N", "F"), ("N", "T", "F"), ("T", "N", "F"))


def output_core(axes, sizes) -> tuple[str, ...]:
    """An output's axis labels without its size-1 layout-only axes."""
    return tuple(a for a, n in zip(axes, sizes) if not (n == 1 and a in LAYOUT_ONLY_AXES))


def require_output_layout(axes, sizes, gru_state: bool, what: str) -> None:
    """Refuse, naming ``what``, a source output a GRUModel cannot stand for: axes ``to_batch_first`` cannot
    lay out, or every step's hidden state with no head after it (``gru_state``: the GRU's state itself)."""
    core = output_core(axes, sizes)
    if core not in OUTPUT_LAYOUTS:
        raise UnsupportedModelError(f"{what} has axes {tuple(axes)}, which grukit cannot lay out")
    if gru_state and "T" in core:
        raise UnsupportedModelError(f"{what} is every step's hidden state without a dense head; "
                                    "grukit's model without a head outputs the last step")


def to_batch_first(out: np.ndarray, axes) -> np.ndarray:
    """A raw output whose axes are labelled ``axes`` without its layout-only size-1 axes, batch first.

    An output whose rank does not match the labels (or with no labels) is returned as it is, for the caller's
    shape check to report."""
    if not axes or len(axes) != out.ndim:
        return out
    keep = [i for i, (a, n) in enumerate(zip(axes, out.shape)) if not (n == 1 and a in LAYOUT_ONLY_AXES)]
    out = out.reshape([out.shape[i] for i in keep])
    if [axes[i] for i in keep] == ["T", "N", "F"]:
        out = out.transpose(1, 0, 2)
    return out


# --- ONNX ----------------------------------------------------------------------------------------------
def run_onnx_file(path: Path, model: GRUModel, x: np.ndarray) -> tuple[np.ndarray, str]:
    """The .onnx file's output on x in onnxruntime, or in ONNX's reference evaluator if a GRU has layout=1.

    Raises FrameworkUnavailable (its cause: onnxruntime's own error) when onnxruntime cannot run the file."""
    proto = onnx.load(str(path), load_external_data=False)  # the structure only; weights are read below
    constants = {init.name for init in proto.graph.initializer}
    name = next(i.name for i in proto.graph.input if i.name not in constants)
    feed = {name: to_input_layout(x, model.meta.get("input_layout"))}
    batch_major_gru = any(n.op_type == "GRU" and any(a.name == "layout" and a.i == 1 for a in n.attribute)
                          for n in proto.graph.node)
    if batch_major_gru:
        load_external_data_for_model(proto, str(path.parent))
        out, who = ReferenceEvaluator(proto).run(None, feed)[0], "ONNX reference evaluator (GRU layout=1)"
    else:
        try:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out, who = session.run(None, feed)[0], "onnxruntime"
        except Exception as e:  # onnxruntime's own errors (IR version, invalid graph) have no common base class
            raise FrameworkUnavailable(f"onnxruntime cannot run {path.name} ({e})") from e
    return to_batch_first(out, model.meta.get("output_axes")), who


# --- torch ---------------------------------------------------------------------------------------------
def run_torch_module(module, feed: np.ndarray) -> np.ndarray:
    """The nn.Module's output on feed (already in its input layout) in eval mode, its training mode restored
    afterwards; NumPy in the module's own output layout."""
    was_training = module.training
    module.eval()
    try:
        return _torch_call(module, feed)
    finally:
        module.train(was_training)


def _torch_call(module, feed: np.ndarray) -> np.ndarray:
    """module(feed) without autograd, as NumPy; for an nn.GRU-style (output, h_n) pair, the output."""
    import torch  # optional (see run_source)

    with torch.no_grad():
        out = module(torch.from_numpy(feed))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().cpu().numpy()


def run_exported_program(ep, model: GRUModel, x: np.ndarray) -> tuple[np.ndarray, str]:
    """A torch.export program's output on x. Its input shape may fix the batch (x runs in chunks of it, the
    last one padded with copies of its last row, which are dropped) and T (refused unless x has that T)."""
    import torch  # optional (see run_source)

    layout = model.meta.get("input_layout")
    user_inputs = set(ep.graph_signature.user_inputs)
    shape = next(tuple(node.meta["val"].shape) for node in ep.graph.nodes
                 if node.op == "placeholder" and node.name in user_inputs)
    fixed = [int(s) if isinstance(s, int) else None for s in shape]  # a dynamic dim is a torch.SymInt
    batch_axis, time_axis = (1, 0) if layout == "time_major" else (0, 1)
    if fixed[time_axis] is not None and fixed[time_axis] != x.shape[1]:
        raise FrameworkUnavailable(f"the exported program fixes T={fixed[time_axis]}; the validation data has "
                                   f"T={x.shape[1]}")
    chunk = fixed[batch_axis] or x.shape[0]
    module = ep.module()  # its mode was fixed at export (the loader refuses train=True); it refuses eval()
    outs = []
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk]
        n = part.shape[0]
        if n < chunk:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - n, axis=0)])
        out = _torch_call(module, to_input_layout(part, layout))
        outs.append(to_batch_first(out, model.meta.get("output_axes"))[:n])
    return np.concatenate(outs), f"torch {torch.__version__} (torch.export program)"


# --- Keras ---------------------------------------------------------------------------------------------
def run_keras_file(path: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """The .keras file's output on x in Keras; FrameworkUnavailable if Keras cannot be imported."""
    if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ:
        # Keras 3 defaults to TensorFlow, which grukit never needs; torch is grukit's framework dependency.
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras  # optional: grukit reads .keras files without it, and runs them in Keras when present
    except ImportError as e:
        raise FrameworkUnavailable(f"Keras is not importable ({e})") from e
    # grukit's own reader has accepted every layer before Keras sees the file (a Lambda or custom layer is
    # refused there); safe_mode keeps Keras from deserializing code all the same.
    net = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    out = np.asarray(net.predict(x, verbose=0, batch_size=KERAS_BATCH))
    return out, f"Keras {keras.__version__} ({keras.backend.backend()} backend)"
