"""Structured pruning: remove whole hidden units, so the model the device runs is a smaller dense GRU.

A hidden unit j of layer l lives in three gates (rows j of W, R and the biases), in the recurrence (column j
of R) and in whatever reads the layer's output (column j of the next layer's W, or of the head's first dense
layer). ``remove_units`` takes all of them out and returns a smaller ``GRUModel``: every later stage
(quantization, the runtimes, the exporters, the C kernel) works on it unchanged.

Which units go (``unit_importance``):
- ``"weight"``: the norm of every weight that touches the unit (its rows in, its columns out);
- ``"activation"``: from its states on calibration data, each weighted by the norm of the weights that read
  it (its recurrent column and the consumer's column): the units are picked greedily, each time the one the
  picked ones explain least (a pivoted Cholesky of the weighted states' Gram matrix), and score the part they
  add. A unit that never moves, that nobody weighs, or that the kept ones reproduce costs little to remove
  once the refit below has redistributed its weights.
Per layer (``scope="layer"``: each layer loses the same fraction) or over the whole model (``"global"``:
scores normalised by each layer's mean, at least one unit kept per layer).

Pruning without the training pipeline (``refit``): after removing units, what consumed them is refitted by
least squares on calibration data so that the pruned model reproduces the ORIGINAL model's pre-activations,
layer by layer: each layer's input weights on the pruned model's own (already refitted) inputs, its
recurrent weights on the original's states restricted to the kept units (the recurrence cannot be run
before its weights exist), the head's first dense layer on the pruned model's top states; each with its bias.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from grukit.core.errors import BadInputError, UnsupportedModelError
from grukit.core.float_gru import as_batch, direction_forward, layers_forward, predicted_labels
from grukit.core.graph import split_biases
from grukit.core.model import GATE_N, GATE_R, GATE_Z, Dense, GRUDirection, GRULayer, GRUModel
from grukit.core.scheme import scheme_named
from grukit.quantize.quantize import quantize_model

CRITERIA = ("weight", "activation")
SCOPES = ("layer", "global")
# Ridge damping of the least-squares refits, relative to the mean diagonal of X^T X: keeps a fit on
# collinear or constant inputs (a unit that barely moves) well posed.
RIDGE = 1e-4
CALIB_STEPS_MAX = 200_000  # sequence steps the refits read (a random, seeded subset beyond that)
REFIT_FLOPS = 5e10  # the arithmetic one layer's weighted refit may take (~5 s); fewer steps beyond it
WEIGHT_FLOOR = 0.03  # see _state_weights
# Rounds of each layer's refit: the first on the original states, each further one also on the states the
# previous round's weights reach on their own; the round whose states stay closest to the original's is kept.
REFIT_ROUNDS = 4


@dataclass(frozen=True)
class PruneResult:
    """The pruned model, the units each layer kept (indices into the original layer) and how it was chosen."""

    model: GRUModel
    kept: tuple[np.ndarray, ...]
    criterion: str
    scope: str
    refitted: bool

    def describe(self) -> str:
        """How the units were chosen and the weights set, in words."""
        where = "in each layer" if self.scope == "layer" else "over the whole model"
        how = ("the consumers refitted by least squares on the calibration data to reproduce the original model"
               if self.refitted else "no refit")
        return f"structured: whole hidden units removed by the {self.criterion} criterion {where}; {how}"

    def summary(self, original: GRUModel) -> dict:
        """The ratio of units removed, per layer units before / after, parameters and MACs per step before /
        after (report.json's ``prune``)."""
        before = sum(layer.hidden_size for layer in original.layers)
        return {
            "method": self.describe(), "ratio": 1.0 - sum(len(k) for k in self.kept) / before,
            "layers": [{"hidden_before": a.hidden_size, "hidden_after": b.hidden_size}
                       for a, b in zip(original.layers, self.model.layers)],
            "params_before": original.param_count(), "params_after": self.model.param_count(),
            "macs_before": original.macs_per_step(), "macs_after": self.model.macs_per_step(),
        }


def _check_prunable(model: GRUModel) -> None:
    if not isinstance(model, GRUModel):
        raise BadInputError(f"expected a grukit GRUModel, got a {type(model).__name__}")
    if model.bidirectional:
        raise UnsupportedModelError("pruning a bidirectional GRU is not supported: its two directions share the "
                                    "output features a unit would leave")


def _consumer_columns(model: GRUModel, li: int) -> np.ndarray:
    """What reads layer li's output, as rows of weights over its units: [rows, H]."""
    if li + 1 < len(model.layers):
        return model.layers[li + 1].forward.W.reshape(-1, model.layers[li].hidden_size)
    if model.head is not None:
        return model.head.layers[0].W
    return np.zeros((0, model.layers[li].hidden_size), np.float32)


def unit_importance(model: GRUModel, calib_x: np.ndarray | None = None, criterion: str = "activation"
                    ) -> list[np.ndarray]:
    """A score per hidden unit of every layer ([H_l] each); higher keeps."""
    _check_prunable(model)
    if criterion not in CRITERIA:
        raise BadInputError(f"unknown importance criterion {criterion!r}; use one of {', '.join(CRITERIA)}")
    if criterion == "activation" and calib_x is None:
        raise BadInputError("the activation criterion needs calibration data")
    states = layers_forward(model, _calibration(model, calib_x)) if criterion == "activation" else None
    scores = []
    for li, layer in enumerate(model.layers):
        d = layer.forward
        out = np.concatenate([d.R.transpose(0, 2, 1).reshape(-1, d.hidden_size).T,  # recurrent columns [H, 3H]
                              _consumer_columns(model, li).T], axis=1)
        out_norm = np.linalg.norm(out.astype(np.float64), axis=1)
        if criterion == "weight":
            rows = np.concatenate([d.W.transpose(1, 0, 2).reshape(d.hidden_size, -1),
                                   d.R.transpose(1, 0, 2).reshape(d.hidden_size, -1)], axis=1)
            scores.append(np.sqrt(np.linalg.norm(rows.astype(np.float64), axis=1) ** 2 + out_norm ** 2))
        else:
            scores.append(_greedy_span(_rows(states[li]).astype(np.float64) * out_norm))
    return scores


def _greedy_span(features: np.ndarray) -> np.ndarray:
    """Scores from a pivoted Cholesky of features^T features [H, H]: the unit whose (weighted) activity the
    units picked so far explain least is picked next, and scores the part it adds (its residual norm).
    After a least-squares refit, a unit the kept ones explain costs little to remove; so the order of picking
    is the order of keeping."""
    gram = features.T @ features / max(features.shape[0], 1)
    H = gram.shape[0]
    residual = np.diag(gram).copy()
    basis = np.zeros((H, H))
    scores = np.zeros(H)
    picked = np.zeros(H, bool)
    for k in range(H):
        j = int(np.argmax(np.where(picked, -np.inf, residual)))
        scores[j] = np.sqrt(max(residual[j], 0.0)) + (H - k) * 1e-12  # ties broken by pick order
        picked[j] = True
        if residual[j] <= 1e-18:
            continue  # the rest is already explained: their residuals stay 0, picked in index order
        column = (gram[:, j] - basis[:, :k] @ basis[j, :k]) / np.sqrt(residual[j])
        basis[:, k] = column
        residual -= column ** 2
    return scores


def _calibration(model: GRUModel, calib_x) -> np.ndarray:
    if calib_x is None:
        raise BadInputError("pruning with a refit or the activation criterion needs calibration data")
    x = as_batch(calib_x, model.input_size)
    if x.shape[0] == 0:
        raise BadInputError("calibration data holds no sequences")
    return x


def units_to_keep(model: GRUModel, scores: list[np.ndarray], ratio: float | None = None,
                  units: int | list[int] | None = None, scope: str = "layer") -> list[np.ndarray]:
    """The sorted indices each layer keeps: the highest scores, ``units`` of them (one number for every layer
    or one per layer) or all but ``ratio`` of them (per layer, or over the model with ``scope="global"``).
    A model without a head keeps its top layer whole (its state is the output)."""
    if (ratio is None) == (units is None):
        raise BadInputError("give either a pruning ratio or the units to keep")
    if scope not in SCOPES:
        raise BadInputError(f"unknown pruning scope {scope!r}; use one of {', '.join(SCOPES)}")
    sizes = [layer.hidden_size for layer in model.layers]
    # Without a head the top layer's state is the model's output: its units all stay.
    prunable = len(sizes) if model.head is not None else len(sizes) - 1
    if units is not None:
        want = list(units) if isinstance(units, (list, tuple)) else [int(units)] * prunable + sizes[prunable:]
        if len(want) != len(sizes):
            raise BadInputError(f"{len(want)} unit counts for a model of {len(sizes)} layers")
        for li, (n, H) in enumerate(zip(want, sizes)):
            if not 1 <= n <= H:
                raise BadInputError(f"layer {li} has {H} hidden units: cannot keep {n}")
            if li >= prunable and n != H:
                raise UnsupportedModelError(_HEADLESS_TOP.format(H=H))
        return [np.sort(np.argsort(-s, kind="stable")[:n]) for s, n in zip(scores, want)]
    if not 0 <= ratio < 1:
        raise BadInputError(f"the pruning ratio must be in [0, 1), got {ratio}")
    if prunable == 0 and ratio > 0:
        raise UnsupportedModelError(_HEADLESS_TOP.format(H=sizes[-1]))
    everything = [np.arange(H) for H in sizes[prunable:]]
    scores = scores[:prunable]
    if scope == "layer":
        return [np.sort(np.argsort(-s, kind="stable")[:max(1, round(len(s) * (1 - ratio)))]) for s in scores] + everything
    # Global: scores made comparable across layers by each layer's mean; at least one unit kept per layer.
    normalised = [s / (np.mean(s) if np.mean(s) > 0 else 1.0) for s in scores]
    order = sorted(((-v, li, j) for li, s in enumerate(normalised) for j, v in enumerate(s)))
    keep_total = max(prunable, round(sum(sizes[:prunable]) * (1 - ratio)))
    kept = [[int(np.argmax(s))] for s in normalised]
    for _, li, j in order:
        if sum(map(len, kept)) >= keep_total:
            break
        if j not in kept[li]:
            kept[li].append(j)
    return [np.sort(np.array(k)) for k in kept] + everything


_HEADLESS_TOP = ("the model has no head: its output is the top GRU layer's state, so that layer keeps all its {H} "
                 "units (only lower layers can be pruned)")


def remove_units(model: GRUModel, kept: list[np.ndarray]) -> GRUModel:
    """The model with only the ``kept`` units of each layer: rows of its gates and biases, columns of its
    recurrence and of whatever reads it. The weights are left as they are (see ``refit``)."""
    _check_prunable(model)
    layers, prev = [], None
    for layer, keep in zip(model.layers, kept):
        d = layer.forward
        W = d.W[:, keep, :] if prev is None else d.W[:, keep, :][:, :, prev]
        direction = GRUDirection(W=W, R=d.R[:, keep, :][:, :, keep], Wb=d.Wb[:, keep], Rb=d.Rb[:, keep])
        layers.append(replace(layer, forward=direction))
        prev = keep
    head = model.head
    if head is not None:
        first = head.layers[0]
        head = replace(head, layers=(replace(first, W=first.W[:, prev]), *head.layers[1:]))
    return replace(model, layers=tuple(layers), head=head, meta={**model.meta, "pruned_from": _shape(model)})


def _shape(model: GRUModel) -> list[int]:
    return [layer.hidden_size for layer in model.layers]


def _lstsq(inputs: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None,
           allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(A [O, K], c [O]) minimising sum_m w[m, o] (inputs[m] A[o] + c[o] - targets[m, o])^2 + ridge for every
    output o; inputs [M, K], targets [M, O], weights [M, O] (None: all 1, one solve for every output);
    allowed [O, K] (None: all): the entries of A that may be non-zero, the others stay 0."""
    X = np.concatenate([inputs.astype(np.float64), np.ones((inputs.shape[0], 1))], axis=1)
    targets = targets.astype(np.float64)

    def solve(gram: np.ndarray, rhs: np.ndarray, o: int | None = None) -> np.ndarray:
        if o is not None and allowed is not None:
            free = np.append(allowed[o], True)  # the bias is always free
            out = np.zeros(X.shape[1])
            out[free] = solve(gram[np.ix_(free, free)], rhs[free])
            return out
        gram = gram.copy()
        gram[np.diag_indices_from(gram)] += RIDGE * max(np.trace(gram) / gram.shape[0], 1e-12)
        return np.linalg.solve(gram, rhs)

    if weights is None and allowed is None:
        solution = solve(X.T @ X, X.T @ targets)
        return solution[:-1].T, solution[-1]
    gram = X.T @ X if weights is None else None
    solution = np.empty((targets.shape[1], X.shape[1]))
    for o in range(targets.shape[1]):
        if weights is None:
            solution[o] = solve(gram, X.T @ targets[:, o], o)
        else:
            Xw = X * weights[:, o:o + 1]
            solution[o] = solve(X.T @ Xw, Xw.T @ targets[:, o], o)
    return solution[:, :-1], solution[:, -1]


def _rows(a: np.ndarray) -> np.ndarray:
    """[N, T, F] -> [N * T, F]."""
    return a.reshape(-1, a.shape[-1])


def _previous(states: np.ndarray) -> np.ndarray:
    """h_{t-1} for every step of states [N, T, H] (h_{-1} = 0)."""
    return np.concatenate([np.zeros_like(states[:, :1]), states[:, :-1]], axis=1)


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _state_weights(pre: dict[int, np.ndarray], hidden_n: np.ndarray, h_prev: np.ndarray, lbr: int
                   ) -> dict[int, np.ndarray]:
    """How much an error in each gate's pre-activation moves the new state, squared, per row and unit: the
    weights of the refit's least squares. pre: each gate's pre-activation (for linear_before_reset 1, the
    candidate's input side only; hidden_n is its hidden side, which r multiplies). Linearising h = (1 - z) n + z h_prev: an error e in n's
    pre-activation moves h by (1 - z) tanh'(.) e, in z's by (h_prev - n) sigmoid'(.) e, in r's by what r
    multiplies inside n (R_n h_prev + Rb_n for linear_before_reset 1; h_prev itself, before R_n, for 0).
    A saturated gate tolerates a large error in its pre-activation; an open one does not."""
    z, r = _sigmoid(pre[GATE_Z]), _sigmoid(pre[GATE_R])
    n = np.tanh(pre[GATE_N] + (r * hidden_n if lbr else 0.0))
    dn = (1 - z) * (1 - n ** 2)
    raw = {GATE_N: dn, GATE_Z: (h_prev - n) * z * (1 - z),
           GATE_R: (dn * hidden_n if lbr else h_prev) * r * (1 - r)}
    # A floor (WEIGHT_FLOOR of each unit's mean weight): rows where every gate is saturated still count a
    # little, so the fit does not wander where the calibration data happened not to look.
    return {g: w ** 2 + WEIGHT_FLOOR * np.mean(w ** 2, axis=0, keepdims=True) + 1e-30 for g, w in raw.items()}


def _fit_rows(x: np.ndarray, kept_units: int, input_features: int) -> np.ndarray:
    """Indices of the sequences the refit reads: all of them, or a seeded random subset holding at most
    what REFIT_FLOPS allows for a layer of this size (one weighted solve per unit and gate)."""
    N, T = x.shape[:2]
    k = input_features + kept_units + 1
    rows = int(min(CALIB_STEPS_MAX, max(8 * k, REFIT_FLOPS / (2 * 3 * kept_units * k * k))))  # 2: own states
    if N * T <= rows:
        return np.arange(N)
    return np.sort(np.random.default_rng(0).choice(N, max(1, rows // T), replace=False))


def refit(original: GRUModel, pruned: GRUModel, kept: list[np.ndarray], calib_x: np.ndarray,
          keep_zeros: bool = False) -> GRUModel:
    """``pruned`` (``remove_units(original, kept)``) with its weights refitted by least squares so it
    reproduces ``original`` on calib_x, layer by layer (module docstring). keep_zeros: every weight that is
    zero in ``pruned`` stays zero (after magnitude pruning: ``sparsify``)."""
    x = _calibration(original, calib_x)
    layers, seq, seq_original, touched = [], x, x, keep_zeros
    for layer, new_layer, keep in zip(original.layers, pruned.layers, kept):
        lbr = layer.linear_before_reset
        if not touched and len(keep) == layer.hidden_size:
            layers.append(layer)  # nothing removed here or before: the layer stays as it was
            seq = seq_original = direction_forward(layer.forward, lbr, seq)
            continue
        touched = True
        pick = _fit_rows(seq, len(keep), seq.shape[-1])
        target = direction_forward(layer.forward, lbr, seq_original)
        direction, best = None, np.inf
        for _ in range(REFIT_ROUNDS):
            direction = _refit_layer(layer, keep, seq[pick], seq_original[pick], direction,
                                     new_layer.forward if keep_zeros else None)
            states = direction_forward(direction, lbr, seq)
            error = float(np.mean((states - target[:, :, keep]) ** 2))
            if error < best:
                best, best_direction, best_states = error, direction, states
        layers.append(replace(new_layer, forward=best_direction))
        seq, seq_original = best_states, target
    head = pruned.head
    if head is not None and touched:
        first = original.head.layers[0]
        top, top_original = (seq, seq_original) if head.per_step else (seq[:, -1:], seq_original[:, -1:])
        W, b = _lstsq(_rows(top), _rows(top_original) @ first.W.T + first.b,
                      allowed=head.layers[0].W != 0 if keep_zeros else None)
        head = replace(head, layers=(Dense(W, b, first.activation), *head.layers[1:]))
    return replace(pruned, layers=tuple(layers), head=head)


def _refit_layer(layer: GRULayer, keep: np.ndarray, seq: np.ndarray, seq_original: np.ndarray,
                 previous: GRUDirection | None = None, pattern: GRUDirection | None = None) -> GRUDirection:
    """The kept units' weights, fitted to reproduce the original layer's gate pre-activations (on its
    original input and states) from the pruned model's own input and the kept units' states.

    The states the fit reads: the original ones (teacher forcing: the recurrence cannot run before its
    weights exist) and, from the second round, also the states the ``previous`` round's weights produce
    running on their own: what the pruned layer will actually see, so the fit learns to steer drifted
    states back (DAgger's idea, for a least-squares fit). Each gate's input and hidden sides are fitted
    together (the input can stand in for what removed units told the kept ones), except linear_before_reset
    1's candidate, whose hidden side r multiplies; rows weighted by what an error costs the state
    (``_state_weights``). pattern: a direction whose zero weights stay zero."""
    d, lbr = layer.forward, layer.linear_before_reset
    bx, bh = split_biases(d, lbr)
    h_prev, r = _states_and_reset(d, lbr, seq_original)
    hidden_in = {g: r * h_prev if g == GATE_N and not lbr else h_prev for g in (GATE_Z, GATE_R, GATE_N)}
    input_pre = {g: _rows(seq_original) @ d.W[g][keep].T + bx[g][keep] for g in (GATE_Z, GATE_R, GATE_N)}
    hidden_pre = {g: _rows(hidden_in[g]) @ d.R[g][keep].T + bh[g][keep] for g in (GATE_Z, GATE_R, GATE_N)}
    pre = {g: input_pre[g] + (hidden_pre[g] if g != GATE_N or not lbr else 0.0) for g in (GATE_Z, GATE_R, GATE_N)}
    weights = _state_weights(pre, hidden_pre[GATE_N], _rows(h_prev)[:, keep], lbr)
    inputs, I = _rows(seq), seq.shape[-1]
    kept_hidden = {g: _rows(hidden_in[g][:, :, keep]) for g in (GATE_Z, GATE_R, GATE_N)}
    if previous is not None:  # the same targets and weights again, for the states the pruned layer reaches
        own_h, own_r = _states_and_reset(previous, lbr, seq)
        twice = lambda a: np.concatenate([a, a])  # noqa: E731
        kept_hidden = {g: np.concatenate([kept_hidden[g], _rows(own_r * own_h if g == GATE_N and not lbr else own_h)])
                       for g in kept_hidden}
        inputs, input_pre, hidden_pre, pre, weights = (
            twice(inputs), *({g: twice(v) for g, v in table.items()} for table in (input_pre, hidden_pre, pre, weights)))
    W, R = np.empty((3, len(keep), I)), np.empty((3, len(keep), len(keep)))
    new_bx, new_bh = np.zeros((3, len(keep))), np.zeros((3, len(keep)))
    free = ((lambda a: None) if pattern is None else (lambda a: a != 0))  # noqa: E731
    for g in (GATE_Z, GATE_R, GATE_N):
        if g == GATE_N and lbr:
            W[g], new_bx[g] = _lstsq(inputs, input_pre[g], weights[g], free(pattern.W[g]) if pattern else None)
            R[g], new_bh[g] = _lstsq(kept_hidden[g], hidden_pre[g], weights[g],
                                     free(pattern.R[g]) if pattern else None)
        else:
            allowed = None if pattern is None else np.concatenate([pattern.W[g], pattern.R[g]], axis=1) != 0
            A, new_bx[g] = _lstsq(np.concatenate([inputs, kept_hidden[g]], axis=1), pre[g], weights[g], allowed)
            W[g], R[g] = A[:, :I], A[:, I:]
    Rb = np.zeros_like(new_bh)
    if lbr:
        Rb[GATE_N] = new_bh[GATE_N]  # the representation's biases: Rb_n is the part r multiplies
    return GRUDirection(W=W, R=R, Wb=new_bx, Rb=Rb)


def _states_and_reset(d: GRUDirection, lbr: int, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h_{t-1}, r_t) at every step of one direction running over seq."""
    gates: dict[str, list] = {}
    states = direction_forward(d, lbr, seq, observe=lambda name, v: gates.setdefault(name, []).append(v)
                               if name == "r" else None)
    return _previous(states), np.stack(gates["r"], axis=1)


def prune(model: GRUModel, calib_x: np.ndarray | None = None, ratio: float | None = None,
          units: int | list[int] | None = None, criterion: str = "activation", scope: str = "layer",
          refit_weights: bool = True) -> PruneResult:
    """Remove hidden units (``ratio`` of them, or keep ``units``) chosen by ``criterion`` per layer or over the
    model, then (``refit_weights``, needs calib_x) refit what reads them to reproduce the original model."""
    _check_prunable(model)
    # The request checked against the model's sizes before any work (any scores will do for that).
    units_to_keep(model, [np.zeros(layer.hidden_size) for layer in model.layers], ratio, units, scope)
    scores = unit_importance(model, calib_x, criterion)
    kept = units_to_keep(model, scores, ratio=ratio, units=units, scope=scope)
    pruned = remove_units(model, kept)
    if refit_weights:
        pruned = refit(model, pruned, kept, calib_x)
    return PruneResult(pruned, tuple(kept), criterion, scope, refit_weights)


# --- search: the largest ratio within an allowed drop, decided on calibration data -------------------------
SEARCH_TASKS = ("classification", "regression")


@dataclass(frozen=True)
class RatioSearch:
    """How ``search`` chose its ratio. Each trial is (ratio, loss): the loss of the pruned, quantized model
    against the ORIGINAL float model on the calibration data (no labels): for classification the fraction of
    predictions that differ, for regression the MSE between the two outputs."""

    ratio: float
    max_drop: float
    task: str
    scheme: str
    sequences: int
    trials: tuple[tuple[float, float], ...]

    def describe(self) -> str:
        what = "predictions differing from" if self.task == "classification" else "MSE against"
        tried = ", ".join(f"{r:.3g}: {_loss_text(loss, self.task)}" for r, loss in sorted(self.trials))
        return (f"ratio {self.ratio:.3g}: the largest whose {self.scheme} model keeps its {what} the original float "
                f"model on the {self.sequences} calibration sequences within {_loss_text(self.max_drop, self.task)} "
                f"(tried {tried})")


def _loss_text(loss: float, task: str) -> str:
    return f"{100 * loss:.2f}%" if task == "classification" else f"{loss:.4g}"


def calibration_loss(reference: np.ndarray, out: np.ndarray, model: GRUModel, task: str) -> float:
    """How far ``out`` is from ``reference`` (outputs of the same inputs): the fraction of differing predicted
    labels (classification) or the mean squared difference (regression)."""
    if task == "classification":
        return float(np.mean(predicted_labels(out, model) != predicted_labels(reference, model)))
    return float(np.mean((out.astype(np.float64) - reference) ** 2))


def search(model: GRUModel, calib_x: np.ndarray, max_drop: float, task: str = "classification",
           scheme: str = "int8", criterion: str = "activation", scope: str = "layer",
           progress: Callable[[str], None] | None = None) -> tuple[PruneResult, RatioSearch]:
    """The largest ratio (in steps of one unit of the widest layer) whose pruned, refitted and quantized
    model stays within ``max_drop`` of the original float model on the calibration data (``RatioSearch``):
    a bisection, which assumes the loss grows with the ratio. Ratio 0 when even one unit is too many.
    ``progress(message)`` after each trial."""
    _check_prunable(model)
    if task not in SEARCH_TASKS:
        raise BadInputError(f"unknown task {task!r}; use one of {', '.join(SEARCH_TASKS)}")
    if not max_drop >= 0:
        raise BadInputError(f"the allowed drop must be zero or positive, got {max_drop}")
    x = _calibration(model, calib_x)
    reference = model.predict(x)
    widest = max(layer.hidden_size for layer in model.layers)
    scores = unit_importance(model, x, criterion)
    tried: dict[int, tuple[float, PruneResult]] = {}

    def trial(k: int) -> float:
        kept = units_to_keep(model, scores, ratio=k / widest, scope=scope)
        pruned = refit(model, remove_units(model, kept), kept, x)
        out = quantize_model(pruned, x, scheme=scheme).predict(x)
        tried[k] = (calibration_loss(reference, out, model, task),
                    PruneResult(pruned, tuple(kept), criterion, scope, refitted=True))
        if progress is not None:
            progress(f"ratio {k / widest:.3g}: {_loss_text(tried[k][0], task)}")
        return tried[k][0]

    good, bad = 0, widest  # bisection over units removed from the widest layer: good passes, bad does not
    while bad - good > 1:
        middle = (good + bad) // 2
        if trial(middle) <= max_drop:
            good = middle
        else:
            bad = middle
    result = tried[good][1] if good in tried else PruneResult(model, tuple(np.arange(layer.hidden_size)
                                                                           for layer in model.layers),
                                                              criterion, scope, refitted=False)
    found = RatioSearch(good / widest, max_drop, task, scheme_named(scheme).name, x.shape[0],
                        tuple((k / widest, loss) for k, (loss, _) in tried.items()))
    return result, found


# --- magnitude pruning: single weights or blocks set to zero ----------------------------------------------
# The C kernel's fully connected loop takes 4 rows x 8 columns per iteration (firmware_ref's grukit_fc_s8 /
# _s16); each gate matrix is padded to 4 rows on its own, so blocks aligned at row 0 / column 0 of every
# matrix are the groups the kernel can skip and its generator can leave out of flash.
KERNEL_BLOCK = (4, 8)
SPARSITY_SCOPES = ("global", "matrix")


@dataclass(frozen=True)
class SparsityResult:
    """The model with weights set to zero, and per matrix (``layer<l>/W_<gate>``, ``layer<l>/R_<gate>``,
    ``head<k>/W``) its shape, zero weights and zero blocks."""

    model: GRUModel
    block: tuple[int, int]
    scope: str
    tensors: tuple[dict, ...]
    refitted: bool

    def describe(self) -> str:
        zeros = sum(t["zeros"] for t in self.tensors)
        total = sum(t["elements"] for t in self.tensors)
        unit = "single weights" if self.block == (1, 1) else f"{self.block[0]}x{self.block[1]} blocks"
        where = "over the whole model" if self.scope == "global" else "in each matrix"
        how = "; the other weights refitted by least squares on the calibration data" if self.refitted else ""
        return (f"magnitude pruning of {unit} {where}: {zeros:,} of {total:,} weights zero "
                f"({100 * zeros / max(total, 1):.1f}%){how}")


def _matrices(model: GRUModel) -> list[tuple[str, np.ndarray]]:
    out = []
    for li, layer in enumerate(model.layers):
        for g, gate in enumerate(("z", "r", "n")):
            out += [(f"layer{li}/W_{gate}", layer.forward.W[g]), (f"layer{li}/R_{gate}", layer.forward.R[g])]
    if model.head is not None:
        out += [(f"head{k}/W", dense.W) for k, dense in enumerate(model.head.layers)]
    return out


def _block_norms(w: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """The root mean square of every block of w [rows, cols]: [ceil(rows/b0), ceil(cols/b1)]. An edge block
    is partial; its mean is over the weights it has, so it ranks like a whole block of the same weights."""
    b0, b1 = block
    rows, cols = -(-w.shape[0] // b0) * b0, -(-w.shape[1] // b1) * b1
    padded, count = np.zeros((rows, cols)), np.zeros((rows, cols))
    padded[:w.shape[0], :w.shape[1]] = w
    count[:w.shape[0], :w.shape[1]] = 1
    shape = (rows // b0, b0, cols // b1, b1)
    return np.sqrt((padded.reshape(shape) ** 2).sum(axis=(1, 3)) / count.reshape(shape).sum(axis=(1, 3)))


def _expand(mask: np.ndarray, block: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    return np.repeat(np.repeat(mask, block[0], axis=0), block[1], axis=1)[:shape[0], :shape[1]]


def sparsify(model: GRUModel, sparsity: float, block: tuple[int, int] = KERNEL_BLOCK, scope: str = "global",
             calib_x: np.ndarray | None = None) -> SparsityResult:
    """Set the ``sparsity`` fraction of blocks with the smallest root mean square to zero, in every gate matrix (W and R)
    and head layer: ranked over the whole model (``scope="global"``) or within each matrix (``"matrix"``).
    block (1, 1) prunes single weights; the default is the C kernel's group (KERNEL_BLOCK), which its
    generator stores compactly and its loop skips. With calib_x the remaining weights (and biases) are
    refitted by least squares to reproduce the original model, as after structured pruning (``refit``);
    without it they stay as they were."""
    _check_prunable(model)
    if not 0 <= sparsity < 1:
        raise BadInputError(f"the sparsity must be in [0, 1), got {sparsity}")
    if scope not in SPARSITY_SCOPES:
        raise BadInputError(f"unknown sparsity scope {scope!r}; use one of {', '.join(SPARSITY_SCOPES)}")
    block = tuple(int(b) for b in block)
    if len(block) != 2 or min(block) < 1:
        raise BadInputError(f"a block is (rows, columns) of at least 1, got {block}")
    matrices = _matrices(model)
    norms = [_block_norms(w.astype(np.float64), block) for _, w in matrices]
    if scope == "global":
        every = np.concatenate([n.ravel() for n in norms])
        cut = int(round(sparsity * every.size))
        threshold_rank = np.argsort(every, kind="stable")[:cut]
        pruned_flat = np.zeros(every.size, bool)
        pruned_flat[threshold_rank] = True
        masks, start = [], 0
        for n in norms:
            masks.append(pruned_flat[start:start + n.size].reshape(n.shape))
            start += n.size
    else:
        masks = []
        for n in norms:
            flat = np.zeros(n.size, bool)
            flat[np.argsort(n.ravel(), kind="stable")[:int(round(sparsity * n.size))]] = True
            masks.append(flat.reshape(n.shape))
    zeroed = {name: np.where(_expand(m, block, w.shape), 0.0, w).astype(np.float32)
              for (name, w), m in zip(matrices, masks)}
    layers = []
    for li, layer in enumerate(model.layers):
        d = layer.forward
        W = np.stack([zeroed[f"layer{li}/W_{g}"] for g in ("z", "r", "n")])
        R = np.stack([zeroed[f"layer{li}/R_{g}"] for g in ("z", "r", "n")])
        layers.append(replace(layer, forward=GRUDirection(W=W, R=R, Wb=d.Wb, Rb=d.Rb)))
    head = model.head
    if head is not None:
        head = replace(head, layers=tuple(replace(dense, W=zeroed[f"head{k}/W"]) for k, dense in enumerate(head.layers)))
    sparse = replace(model, layers=tuple(layers), head=head)
    if calib_x is not None:
        sparse = refit(model, sparse, [np.arange(layer.hidden_size) for layer in model.layers], calib_x,
                       keep_zeros=True)
    tensors = tuple({"name": name, "shape": list(w.shape), "elements": int(w.size), "zeros": int(np.sum(w == 0)),
                     "blocks": int(m.size), "zero_blocks": int(np.sum(_block_norms(w.astype(np.float64), block) == 0))}
                    for (name, w), m in zip(_matrices(sparse), masks))
    return SparsityResult(sparse, block, scope, tensors, calib_x is not None)
