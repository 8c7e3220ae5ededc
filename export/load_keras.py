"""Load a Keras 3 ``.keras`` file (a zip of ``config.json`` and ``model.weights.h5``) without Keras.

Only ``zipfile``, ``json`` and ``h5py`` are needed, so a user without TensorFlow (or Keras) can load the
model. What is read, in the order data flows through the model:

    model     a ``Sequential``, or a ``Functional`` model (``keras.Model(inputs, outputs)``) whose graph is one
              chain from one input to one output, each layer called once; either may hold nested Sequential
              or Functional models as layers, read in place
    GRU       ``GRU`` layers (Keras gate order z, r, h, the same as grukit's; ``reset_after=True`` is
              ``linear_before_reset=1`` with a (2, 3H) bias = input and recurrent, ``reset_after=False`` is
              ``0`` with a (3H,) input bias), and ``Bidirectional(GRU)`` merged by "concat" that returns every
              step (Keras flips its backward half back into input time order, as grukit's reverse direction).
              The last GRU may return its state (return_state=True): in a Functional model the layer after
              it takes either its output or its final state (the head then reads the final state)
    head      ``Dense`` layers with activations in HEAD_ACTIVATIONS, or ``TimeDistributed(Dense)``; an
              activation may also be its own ``Activation`` / ``ReLU`` (max_value 6 is relu6) / ``Softmax``
              layer right after a linear Dense. A Dense on a GRU that returns every step is applied per step
              (the head reads every step), otherwise it reads the last step
    folded    per-feature affine layers: ``BatchNormalization`` (inference: moving mean and variance),
              ``Normalization``, ``Rescaling``. One that follows a linear Dense is folded into that Dense's
              output; any other is folded into the input side of the next Dense or GRU (so ``Normalization``
              before the first GRU becomes that GRU's input weights and input bias)
    skipped   inference identities: Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout,
              Identity, ActivityRegularization, ``Activation("linear")``, a Flatten of [N, F]

Anything else is refused, naming the layer and why. Where Keras is importable the file is also run through
Keras (``source_runtime``: the torch backend unless KERAS_BACKEND names another) and compared.
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import h5py

from grukit.core.errors import BadInputError, MissingDependencyError, UnsupportedModelError
from grukit.export.self_check import require_agreement
from grukit.export.source_runtime import FrameworkUnavailable, run_source
from grukit.core.model import HEAD_ACTIVATIONS, Dense, GRUDirection, GRULayer, GRUModel, Head

# Sequence length of the self check when the file does not fix one.
FREE_TIME = 7

# GRU config entries that must hold these values for grukit to compute the same function. (dropout and
# recurrent_dropout act only in training; unroll changes how, not what, Keras computes.)
GRU_REQUIRED = {"activation": "tanh", "recurrent_activation": "sigmoid", "go_backwards": False,
                "stateful": False}

# Layers that are the identity at inference (ActivityRegularization only adds a training loss).
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity",
                   "ActivityRegularization")

# Keras's backend.epsilon() default: Normalization divides by max(sqrt(variance), it).
KERAS_EPSILON = 1e-7

# What the reader understands, for the message that refuses any other layer type.
READ_LAYERS = ("GRU, Bidirectional(GRU), Dense, TimeDistributed(Dense), Activation, ReLU, Softmax, "
               "BatchNormalization, Normalization, Rescaling, Flatten, inference identities (Dropout and its kin), "
               "nested Sequential / Functional models")

# Layer types refused with a reason more useful than "not supported".
REFUSED_WHY = {
    "LSTM": "an LSTM is not a GRU; grukit compiles GRU networks",
    "SimpleRNN": "a SimpleRNN is not a GRU; grukit compiles GRU networks",
    "Conv1D": "a convolutional front end is not supported; grukit's model starts at the first GRU",
    "SeparableConv1D": "a convolutional front end is not supported; grukit's model starts at the first GRU",
    "DepthwiseConv1D": "a convolutional front end is not supported; grukit's model starts at the first GRU",
    "MultiHeadAttention": "attention is not supported",
    "Attention": "attention is not supported",
    "AdditiveAttention": "attention is not supported",
    "GroupQueryAttention": "attention is not supported",
    "Add": "it merges several paths; grukit reads one chain of layers",
    "Concatenate": "it merges several paths; grukit reads one chain of layers",
    "Average": "it merges several paths; grukit reads one chain of layers",
    "Multiply": "it merges several paths; grukit reads one chain of layers",
    "Masking": ("the GRUs after it skip the steps whose features all equal its mask_value (padding) and carry "
                "their state over them; grukit runs every step alike, so padded sequences would give other outputs "
                "(remove the Masking layer to deploy a model fed unpadded sequences)"),
}


def load_keras(path, name: str | None = None, self_check: bool | None = None) -> GRUModel:
    """Read a Keras 3 Sequential or single-chain Functional GRU model. self_check: True runs Keras and refuses
    on a mismatch (Keras must be importable), False skips it, None runs it only where Keras can be imported."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            weights_bytes = z.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise BadInputError(f"{path}: not a Keras 3 .keras archive ({e})") from e
    with h5py.File(io.BytesIO(weights_bytes), "r") as h5:
        _refuse_references_outside(h5, path)
        model, time_steps = _read_model(config, h5, name or path.stem, str(path))
    if self_check is not False:
        _self_check(path, model, time_steps, required=bool(self_check))
    return model


def _refuse_references_outside(h5, path: Path) -> None:
    """A weights file is read as it is, never following a reference out of it: an HDF5 external link, a
    dataset stored in an external file or a virtual dataset would have h5py open another file on this machine.
    Keras writes none of them; a file holding one is refused, before any dataset is read."""
    found: list[str] = []

    def visit_link(name, link):
        if isinstance(link, h5py.ExternalLink):
            found.append(f"{name!r} is an external link to {link.filename!r}")
        elif isinstance(link, h5py.HardLink):
            obj = h5.get(name)
            if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
                found.append(f"dataset {name!r} is stored outside the file")

    h5.visititems_links(visit_link)
    if found:
        raise BadInputError(f"{path}: refused: model.weights.h5 reaches outside the archive ({found[0]})")


def _read_model(config: dict, h5, name: str, source: str) -> tuple[GRUModel, int | None]:
    """The model and its sequence length T when the file fixes one."""
    links, output = layer_chain(config)
    reader = _ChainReader(h5)
    for link in links:
        reader.read(link)
    layers, head = reader.finish(output)
    return GRUModel(layers=layers, head=head, name=name, source=source), _time_steps(links[0].spec)


def _time_steps(first: dict) -> int | None:
    """T of the model's input [N, T, I] when the file fixes it: from its InputLayer, else from what the first
    layer was built for."""
    if first["class_name"] == "InputLayer":
        shape = first["config"].get("batch_shape") or first["config"].get("batch_input_shape")
    else:
        shape = first.get("build_config", {}).get("input_shape")
    return shape[1] if shape and len(shape) == 3 else None


def _where(spec: dict) -> str:
    """How a refusal names a layer: its name and class."""
    return f"Keras layer {spec['config'].get('name', spec.get('name'))!r} ({spec['class_name']})"


# --- the graph: one chain of layers ---------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """One layer of a chain and which output of the layer before it it takes: an index (a GRU with
    return_state=True has several outputs), or None where it takes all of them, as in a Sequential."""

    spec: dict
    takes: int | None


def layer_chain(config: dict) -> tuple[list[Link], int | None]:
    """The model's layers in the order data flows through them, and which output of the last one is the
    model's output (None: all of them); refuses any graph but one chain. config: the model's
    ``{"class_name": ..., "config": ...}``, the whole file's or a nested model's."""
    cls = config.get("class_name")
    if cls == "Sequential":
        return [Link(spec, None) for spec in config["config"]["layers"]], None
    if cls == "Functional":
        return _functional_chain(config["config"])
    raise UnsupportedModelError(f"Keras model class {cls!r} is not supported (grukit reads a Sequential or a "
                                "Functional model)")


def _functional_chain(cfg: dict) -> tuple[list[Link], int]:
    """A Functional model's layers from its input to its output, checked to be a plain chain: one input, one
    output, every layer called once on one tensor, every layer's outputs read by at most one layer."""
    specs = {spec["name"]: spec for spec in cfg["layers"]}
    inputs, outputs = _tensor_refs(cfg["input_layers"]), _tensor_refs(cfg["output_layers"])
    if len(inputs) != 1:
        names = ", ".join(name for name, _ in inputs)
        raise UnsupportedModelError(f"the Keras model has {len(inputs)} inputs ({names}); grukit reads one input "
                                    "sequence")
    if len(outputs) != 1:
        names = ", ".join(name for name, _ in outputs)
        raise UnsupportedModelError(f"the Keras model has {len(outputs)} outputs ({names}); grukit reads one "
                                    "output")
    for spec in cfg["layers"]:
        _refuse_known_unsupported(spec)
    source_of: dict[str, tuple[str, int]] = {}  # layer -> (the layer whose output it takes, which output)
    for spec in cfg["layers"]:
        if spec["class_name"] == "InputLayer":
            continue
        where, nodes = _where(spec), spec.get("inbound_nodes", [])
        if len(nodes) != 1:
            raise UnsupportedModelError(f"{where} is called {len(nodes)} times; grukit reads a chain of layers "
                                        "each called once")
        if not isinstance(nodes[0], dict):
            raise UnsupportedModelError(f"{where}: its inbound node is not in the Keras 3 format grukit reads "
                                        "(a file from Keras 2?)")
        tensors = _keras_tensors(nodes[0])
        if len(tensors) != 1:
            names = ", ".join(repr(t[0]) for t in tensors)
            raise UnsupportedModelError(f"{where} takes {len(tensors)} input tensors ({names}); grukit reads a "
                                        "plain chain, each layer on the one output of the layer before")
        if nodes[0].get("kwargs", {}).get("training") is True:
            raise UnsupportedModelError(f"{where} is called with training=True, so it does not act as at "
                                        "inference")
        source, _, tensor_index = tensors[0]
        source_of[spec["name"]] = (source, tensor_index)
    readers: dict[str, list[str]] = {}
    for layer, (source, _) in source_of.items():
        readers.setdefault(source, []).append(layer)
    for source, layers in readers.items():
        if len(layers) > 1:
            raise UnsupportedModelError(f"the output of Keras layer {source!r} feeds {len(layers)} layers "
                                        f"({', '.join(layers)}): a branch; grukit reads a plain chain")
    (first, _), (last, output) = inputs[0], outputs[0]
    chain, at = [Link(specs[first], None)], first
    while at != last:
        if at not in readers:
            raise UnsupportedModelError(f"Keras layer {at!r} does not lead to the output {last!r}")
        at = readers[at][0]
        chain.append(Link(specs[at], source_of[at][1]))
    off_chain = sorted(set(specs) - {link.spec["name"] for link in chain})
    if off_chain:
        raise UnsupportedModelError(f"Keras layers {', '.join(off_chain)} are not on the chain from the input "
                                    "to the output; grukit reads a plain chain")
    return chain, output


def _tensor_refs(refs) -> list[tuple[str, int]]:
    """(layer name, tensor index) of a Functional config's input_layers / output_layers: one
    [name, node, tensor] triple, or a list (or dict) of them."""
    if isinstance(refs, dict):
        refs = list(refs.values())
    if len(refs) == 3 and isinstance(refs[0], str):
        return [(refs[0], int(refs[2]))]
    return [ref for nested in refs for ref in _tensor_refs(nested)]


def _keras_tensors(node) -> list[tuple[str, int, int]]:
    """(layer, node index, tensor index) of every Keras tensor a call takes, in its args and kwargs."""
    if isinstance(node, dict) and node.get("class_name") == "__keras_tensor__":
        return [tuple(node["config"]["keras_history"])]
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return [t for value in values for t in _keras_tensors(value)]


def _refuse_known_unsupported(spec: dict) -> None:
    why = REFUSED_WHY.get(spec["class_name"])
    if why is not None:
        raise UnsupportedModelError(f"{_where(spec)}: {why}")


# --- the layers: GRUs, then a head ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Affine:
    """A per-feature affine map x -> scale * x + shift (scale, shift float64, shape () or [F]) waiting to be
    folded into weights; ``where`` names the layers it came from."""

    scale: np.ndarray
    shift: np.ndarray
    where: str

    def then(self, other: "_Affine") -> "_Affine":
        """This map followed by other."""
        return _Affine(other.scale * self.scale, other.scale * self.shift + other.shift,
                       f"{self.where}, {other.where}")

    def on(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) as [width] vectors."""
        if self.scale.size not in (1, width) or self.shift.size not in (1, width):
            raise BadInputError(f"{self.where}: scales {self.scale.shape} / offsets {self.shift.shape} for "
                                f"{width} features")
        return np.broadcast_to(self.scale, (width,)), np.broadcast_to(self.shift, (width,))


def _fold_into_input(W: np.ndarray, b: np.ndarray, affine: _Affine) -> tuple[np.ndarray, np.ndarray]:
    """W [..., F] and bias b [...] that compute on x what W, b compute on scale * x + shift:
    W (scale * x + shift) + b = (W * scale) x + (b + W shift)."""
    scale, shift = affine.on(W.shape[-1])
    W64 = W.astype(np.float64)
    return W64 * scale, b.astype(np.float64) + W64 @ shift


def _fold_into_output(d: Dense, affine: _Affine) -> Dense:
    """The linear Dense d followed by the affine map, as one Dense: scale * (W x + b) + shift."""
    scale, shift = affine.on(d.out_features)
    return replace(d, W=d.W.astype(np.float64) * scale[:, None], b=scale * d.b.astype(np.float64) + shift)


class _ChainReader:
    """Reads a chain of Keras layers, one ``read`` at a time, into GRU layers and a head."""

    def __init__(self, h5):
        self.h5 = h5
        self.grus: list[GRULayer] = []
        self.dense: list[Dense] = []
        self.reads: str | None = None
        self.sequence = True  # whether the current tensor has a time axis, [N, T, F]
        self.from_state = False  # whether the current tensor is the last GRU's final state h_n (return_state)
        self.open_dense = False  # the last Dense's output is still W x + b: an affine or activation folds into it
        self.pending: _Affine | None = None  # affine layers waiting for the next Dense or GRU
        self.state_of: str | None = None  # the last layer, if a GRU with return_state=True: [output, states]
        self._h5_root = ""  # the h5 group of the (nested) model whose layers are being read
        self._used_keys: dict[str, int] = {}
        self._read = {
            "Sequential": self._nested_sequential, "Functional": self._nested_functional,
            "InputLayer": self._input, "GRU": self._gru, "Bidirectional": self._bidirectional,
            "Dense": self._dense, "TimeDistributed": self._time_distributed,
            "Activation": self._activation, "ReLU": self._relu, "Softmax": self._softmax,
            "BatchNormalization": self._batch_normalization, "Normalization": self._normalization,
            "Rescaling": self._rescaling, "Flatten": self._flatten,
            **{cls: self._identity for cls in IDENTITY_LAYERS},
        }

    def read(self, link: Link) -> None:
        spec = link.spec
        cls, cfg = spec["class_name"], spec["config"]
        where = _where(spec)
        _refuse_known_unsupported(spec)
        if cls not in self._read:
            raise UnsupportedModelError(f"{where}: layer type {cls!r} is not supported; grukit reads {READ_LAYERS}")
        self._take(link.takes, where)
        self._read[cls](cfg, where, self._h5_group(cls, cfg, where))

    def finish(self, output: int | None) -> tuple[tuple[GRULayer, ...], Head | None]:
        """The GRU layers and head read; output: which output of the last layer is the model's."""
        self._take(output, "the model's output")
        if not self.grus:
            raise UnsupportedModelError("the Keras model holds no GRU layer")
        if self.pending is not None:
            raise UnsupportedModelError(f"{self.pending.where}: no Dense or GRU follows to fold it into; grukit's "
                                        "model ends with a GRU or a Dense")
        if not self.dense and self.sequence:
            raise UnsupportedModelError("the last GRU returns every step (return_sequences=True) without a Dense "
                                        "head; grukit's model without a head outputs the last step")
        return tuple(self.grus), (Head(tuple(self.dense), self.reads) if self.dense else None)

    def _take(self, takes: int | None, where: str) -> None:
        """Select the output of the layer before that flows into ``where``: takes is its index, or None for all
        of them. A GRU with return_state=True gives [output, final state] (a Bidirectional one [output,
        forward state, backward state]); any other layer one output."""
        gru, self.state_of = self.state_of, None
        if gru is None:
            if takes not in (None, 0):
                raise UnsupportedModelError(f"{where} takes output {takes} of a layer with one output")
            return
        if takes is None:
            raise UnsupportedModelError(f"{where} takes all outputs of {gru} (return_state=True), the list "
                                        "[output, final state], where grukit reads one tensor (in a keras.Model, "
                                        "pass one of them on)")
        if takes == 0:
            return
        if self.grus[-1].bidirectional:
            raise UnsupportedModelError(
                f"{where} takes a final state of {gru}: its backward half's final state is its state after "
                "reading the whole sequence backwards, which grukit's head does not read; take its output with "
                "return_sequences=True and a per-step head or another GRU after it")
        self.sequence, self.from_state = False, True

    def _h5_group(self, cls: str, cfg: dict, where: str) -> str:
        """The group model.weights.h5 keeps this layer's weights in: layers/<class in snake case>, _1, _2, ...
        by the layer's place among those of its class in its model (Keras files layers by class, not by name),
        under layers/<the nested model's group>/ for a layer of a nested model."""
        key = _snake_case(cls)
        if key in self._used_keys:
            self._used_keys[key] += 1
            key = f"{key}_{self._used_keys[key]}"
        else:
            self._used_keys[key] = 0
        group = f"{self._h5_root}layers/{key}"
        saved_as = self.h5[f"{group}/vars"].attrs.get("name") if f"{group}/vars" in self.h5 else None
        if saved_as is not None and saved_as != cfg.get("name", saved_as):
            raise BadInputError(f"{where}: model.weights.h5 holds layer {saved_as!r} under {group}; the file's "
                                "weights do not line up with its config")
        return group

    def _vars(self, group: str, where: str) -> list[np.ndarray]:
        for path in (f"{group}/cell/vars", f"{group}/vars"):
            if path in self.h5 and len(self.h5[path]):
                g = self.h5[path]
                return [np.asarray(g[str(i)], np.float32) for i in range(len(g))]
        raise BadInputError(f"{where}: no weights under {group} in model.weights.h5")

    # --- nested models ---
    def _nested_sequential(self, cfg: dict, where: str, group: str) -> None:
        self._nested({"class_name": "Sequential", "config": cfg}, where, group)

    def _nested_functional(self, cfg: dict, where: str, group: str) -> None:
        self._nested({"class_name": "Functional", "config": cfg}, where, group)

    def _nested(self, config: dict, where: str, group: str) -> None:
        """A model used as a layer: its chain read in place, its weights under its own group."""
        links, output = layer_chain(config)
        outer = self._h5_root, self._used_keys
        self._h5_root, self._used_keys = f"{group}/", {}
        for link in links:
            self.read(link)
        self._h5_root, self._used_keys = outer
        self._take(output, f"the output of {where}")

    # --- GRUs ---
    def _gru_may_follow(self, where: str) -> None:
        if self.dense:
            raise UnsupportedModelError(f"{where} comes after a Dense; grukit's head is the last part of the model")
        if not self.sequence:
            raise UnsupportedModelError(f"{where} follows a layer without a time axis (a GRU's last step or final "
                                        "state)")

    def _add_gru(self, layer: GRULayer, cfg: dict, where: str) -> None:
        if self.pending is not None:
            layer = replace(layer, forward=_fold_into_gru(layer.forward, self.pending),
                            reverse=None if layer.reverse is None else _fold_into_gru(layer.reverse, self.pending))
            self.pending = None
        self.grus.append(layer)
        self.sequence = bool(cfg.get("return_sequences"))
        self.state_of = where if cfg.get("return_state") else None

    def _gru(self, cfg: dict, where: str, group: str) -> None:
        self._gru_may_follow(where)
        direction, lbr = _gru_direction(cfg, self._vars(group, where), where)
        self._add_gru(GRULayer(forward=direction, linear_before_reset=lbr), cfg, where)

    def _bidirectional(self, cfg: dict, where: str, group: str) -> None:
        self._gru_may_follow(where)
        inner = cfg["layer"]
        if inner["class_name"] != "GRU":
            raise UnsupportedModelError(f"{where} wraps a {inner['class_name']}; grukit reads Bidirectional(GRU)")
        if cfg.get("merge_mode", "concat") != "concat":
            raise UnsupportedModelError(f"{where}: merge_mode={cfg.get('merge_mode')!r} is not supported (grukit "
                                        "concatenates the directions: 'concat')")
        forward_cfg = inner["config"]
        backward_cfg = (cfg.get("backward_layer") or {}).get("config", {**forward_cfg, "go_backwards": True})
        if not forward_cfg.get("return_sequences"):
            raise UnsupportedModelError(
                f"{where} returns only its final states (return_sequences=False): its backward half is then the "
                "state after reading the whole sequence backwards, which grukit's head does not read; use "
                "return_sequences=True and a per-step head or another GRU after it")
        forward, lbr = _gru_direction(forward_cfg, self._vars(f"{group}/forward_layer", where), where)
        reverse, lbr_reverse = _gru_direction(backward_cfg, self._vars(f"{group}/backward_layer", where), where,
                                              go_backwards=True)
        if lbr_reverse != lbr or reverse.hidden_size != forward.hidden_size:
            raise UnsupportedModelError(f"{where}: its backward GRU differs from its forward GRU in units or "
                                        "reset_after")
        self._add_gru(GRULayer(forward=forward, linear_before_reset=lbr, reverse=reverse), forward_cfg, where)

    # --- the head ---
    def _dense(self, cfg: dict, where: str, group: str) -> None:
        if not self.grus:
            raise UnsupportedModelError(f"{where} comes before any GRU; grukit's model starts at the first GRU")
        if self.dense and self.dense[-1].activation == "softmax":
            raise UnsupportedModelError(f"{where} follows a softmax; grukit supports softmax on the head's last "
                                        "layer only")
        if cfg.get("lora_rank"):
            raise UnsupportedModelError(f"{where}: lora_rank={cfg['lora_rank']} is not supported (merge the LoRA "
                                        "weights before saving)")
        activation = _activation_name(cfg.get("activation"), where)
        weights = self._vars(group, where)
        use_bias = bool(cfg.get("use_bias", True))
        if len(weights) != (2 if use_bias else 1) or weights[0].ndim != 2:
            raise BadInputError(f"{where}: weights {[w.shape for w in weights]}, expected a kernel [F, O]"
                                + (" and a bias [O]" if use_bias else ""))
        kernel = weights[0]  # [F, O]
        W, b = kernel.T, weights[1] if use_bias else np.zeros(kernel.shape[1], np.float32)
        if self.pending is not None:
            W, b = _fold_into_input(W, b, self.pending)
            self.pending = None
        if self.reads is None:
            self.reads = "every_step" if self.sequence else "final_state" if self.from_state else "last_step"
        self.dense.append(Dense(W, b, activation))
        self.open_dense = activation == "linear"

    def _time_distributed(self, cfg: dict, where: str, group: str) -> None:
        inner = cfg["layer"]
        if inner["class_name"] != "Dense":
            raise UnsupportedModelError(f"{where} wraps a {inner['class_name']}; grukit reads "
                                        "TimeDistributed(Dense)")
        if not self.sequence:
            raise UnsupportedModelError(f"{where} follows a layer without a time axis")
        self._dense(inner["config"], where, f"{group}/layer")

    def _activation(self, cfg: dict, where: str, group: str) -> None:
        self._apply_activation(_activation_name(cfg.get("activation"), where), where)

    def _relu(self, cfg: dict, where: str, group: str) -> None:
        for key in ("negative_slope", "threshold"):
            if float(cfg.get(key) or 0.0) != 0.0:
                raise UnsupportedModelError(f"{where}: {key}={cfg[key]} is not supported (grukit's ReLU has 0)")
        max_value = cfg.get("max_value")
        if max_value is not None and float(max_value) != 6.0:
            raise UnsupportedModelError(f"{where}: max_value={max_value} is not supported (grukit has ReLU and "
                                        "ReLU6)")
        self._apply_activation("relu" if max_value is None else "relu6", where)

    def _softmax(self, cfg: dict, where: str, group: str) -> None:
        axis = cfg.get("axis", -1)
        if axis not in (-1, [-1], 2 if self.sequence else 1):
            raise UnsupportedModelError(f"{where}: axis={axis} is not supported (grukit's softmax is over the "
                                        "features, axis=-1)")
        self._apply_activation("softmax", where)

    def _apply_activation(self, activation: str, where: str) -> None:
        if activation == "linear":
            return
        if not self.open_dense:
            raise UnsupportedModelError(f"{where}: a separate {activation} activation is supported only right "
                                        "after a Dense with a linear activation")
        self.dense[-1] = replace(self.dense[-1], activation=activation)
        self.open_dense = False

    # --- per-feature affine layers ---
    def _affine(self, affine: _Affine) -> None:
        if self.open_dense:
            self.dense[-1] = _fold_into_output(self.dense[-1], affine)
        else:
            self.pending = affine if self.pending is None else self.pending.then(affine)

    def _feature_axis(self, axis, where: str) -> None:
        """Refuse an axis list that is not the features alone (or nothing: one statistic for all)."""
        rank = 3 if self.sequence else 2
        axes = [] if axis is None else [axis] if isinstance(axis, int) else list(axis)
        if any(a % rank != rank - 1 for a in axes):
            raise UnsupportedModelError(f"{where}: axis={axis} keeps statistics along an axis other than the "
                                        "features; grukit folds per-feature scaling only (axis=-1)")

    def _batch_normalization(self, cfg: dict, where: str, group: str) -> None:
        self._feature_axis(cfg.get("axis", -1), where)
        scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
        weights = [w.astype(np.float64) for w in self._vars(group, where)]
        # Keras's order: gamma (if scale), beta (if center), moving mean, moving variance (then renorm's, unused
        # at inference).
        n = int(scale) + int(center)
        if len(weights) < n + 2:
            raise BadInputError(f"{where}: {len(weights)} weight arrays, expected at least {n + 2}")
        gamma = weights[0] if scale else np.float64(1.0)
        beta = weights[int(scale)] if center else np.float64(0.0)
        mean, variance = weights[n], weights[n + 1]
        # Inference: gamma (x - mean) / sqrt(variance + epsilon) + beta.
        s = gamma / np.sqrt(variance + float(cfg.get("epsilon", 1e-3)))
        self._affine(_Affine(s, beta - mean * s, where))

    def _normalization(self, cfg: dict, where: str, group: str) -> None:
        if cfg.get("invert"):
            raise UnsupportedModelError(f"{where}: invert=True (undoing a normalization, x * std + mean) is not "
                                        "supported; grukit folds input normalization")
        self._feature_axis(cfg.get("axis", -1), where)
        if cfg.get("mean") is not None:
            mean, variance = _config_array(cfg["mean"], where), _config_array(cfg["variance"], where)
        else:
            weights = self._vars(group, where)  # mean, variance, count
            mean, variance = weights[0].astype(np.float64), weights[1].astype(np.float64)
        if mean.ndim > 1 or variance.shape != mean.shape:
            raise UnsupportedModelError(f"{where}: mean {mean.shape} / variance {variance.shape} are not "
                                        "per-feature")
        std = np.maximum(np.sqrt(variance), KERAS_EPSILON)
        self._affine(_Affine(1.0 / std, -mean / std, where))

    def _rescaling(self, cfg: dict, where: str, group: str) -> None:
        scale, offset = _config_array(cfg["scale"], where), _config_array(cfg.get("offset", 0.0), where)
        if scale.ndim > 1 or offset.ndim > 1:
            raise UnsupportedModelError(f"{where}: scale {scale.shape} / offset {offset.shape} are not per-feature")
        self._affine(_Affine(scale, offset, where))

    # --- shape-only layers ---
    def _input(self, cfg: dict, where: str, group: str) -> None:
        # The model's input is a sequence [N, T, I]; a nested model's, whatever flows into it.
        rank = 3 if self.sequence else 2
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if shape is not None and len(shape) != rank:
            what = "sequences [N, T, I]" if not self.grus else f"a rank-{rank} tensor here"
            raise UnsupportedModelError(f"{where}: input shape {shape}; grukit reads {what}")

    def _flatten(self, cfg: dict, where: str, group: str) -> None:
        if self.sequence:
            raise UnsupportedModelError(f"{where} flattens the time axis ([N, T, F] -> [N, T*F]); grukit's head "
                                        "reads the last step or every step")

    def _identity(self, cfg: dict, where: str, group: str) -> None:
        pass


def _gru_direction(cfg: dict, weights: list[np.ndarray], where: str,
                   go_backwards: bool = False) -> tuple[GRUDirection, int]:
    """One Keras GRU as a grukit direction and its linear_before_reset; go_backwards: the value it must have
    (True for a Bidirectional's backward half)."""
    for key, value in {**GRU_REQUIRED, "go_backwards": go_backwards}.items():
        if cfg.get(key, value) != value:
            raise UnsupportedModelError(f"{where}: {key}={cfg[key]!r} is not supported (grukit needs {value!r})")
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
    return GRUDirection(W=W, R=R, Wb=Wb, Rb=Rb), 1 if reset_after else 0


def _fold_into_gru(d: GRUDirection, affine: _Affine) -> GRUDirection:
    """The direction d reading scale * x + shift, as a direction reading x: W [3, H, I], Wb [3, H]; the input
    bias is outside the reset gate for either linear_before_reset, so the shift lands in Wb alone."""
    W, Wb = _fold_into_input(d.W, d.Wb, affine)
    return replace(d, W=W, Wb=Wb)


def _activation_name(activation, where: str) -> str:
    """A Keras activation config (a name; None is linear) as one of HEAD_ACTIVATIONS."""
    if activation is None:
        return "linear"
    if isinstance(activation, dict):  # a function Keras serialized as an object: a custom or lambda activation
        name = activation.get("config") if isinstance(activation.get("config"), str) else activation.get("class_name")
        raise UnsupportedModelError(f"{where}: activation {name!r} (a custom function) is not supported; use one "
                                    f"of {HEAD_ACTIVATIONS}")
    if not isinstance(activation, str) or activation not in HEAD_ACTIVATIONS:
        raise UnsupportedModelError(f"{where}: activation {activation!r} is not supported; use one of "
                                    f"{HEAD_ACTIVATIONS}")
    return activation


def _config_array(value, where: str) -> np.ndarray:
    """A number, list or serialized array (``{"class_name": "__numpy__", "config": {"value": ...}}``) of a
    layer's config as float64."""
    if isinstance(value, dict):
        if value.get("class_name") not in ("__numpy__", "__tensor__"):
            raise BadInputError(f"{where}: cannot read the value {value!r}")
        value = value["config"]["value"]
    return np.asarray(value, np.float64)


def _snake_case(name: str) -> str:
    """Keras's keras.src.utils.naming.to_snake_case, which names the groups of model.weights.h5."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


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
