"""The op-by-op integer GRU: the executable specification of grukit's integer arithmetic.

It walks the step graph (``grukit.core.graph``) one op at a time with the integer kernels of
``grukit.core.ops_int``, step by step. Nothing here is optimised: it is what every faster path must
reproduce integer for integer. The fast runtime (``grukit.runtime.int_gru`` and its compiled plan), the
TFLite files in TFLite-Micro and the C kernel are all tested against it or against each other through it.

Shapes: integer sequences [N, T, I]; states [N, H]; outputs [N, O] (last-step head) or [N, T, O].
"""

from __future__ import annotations

import numpy as np

from grukit.core import ops_int as K
from grukit.core.graph import ADD, FULLY_CONNECTED, LOGISTIC, MUL, SUB, TANH, Op

KERNELS = {
    (FULLY_CONNECTED, "int8"): K.fully_connected_s8,
    (FULLY_CONNECTED, "int16"): K.fully_connected_s16,
    (ADD, "int8"): K.add_s8,
    (ADD, "int16"): K.add_s16,
    (SUB, "int8"): K.sub_s8,
    (SUB, "int16"): K.sub_s16,
    (MUL, "int8"): K.mul_s8,
    (MUL, "int16"): K.mul_s16,
    (LOGISTIC, "int8"): K.logistic_s8,
    (LOGISTIC, "int16"): K.logistic_s16,
    (TANH, "int8"): K.tanh_s8,
    (TANH, "int16"): K.tanh_s16,
}


def run_op(op: Op, layer, env: dict[str, np.ndarray]) -> np.ndarray:
    """Execute one graph op of ``layer`` (a QuantizedLayer) on integer tensors in ``env``."""
    dtype = layer.qparams[op.output].dtype
    kernel = KERNELS[(op.kind, dtype)]
    params = layer.prepared[op.output]
    if op.kind == FULLY_CONNECTED:
        fc = layer.fcs[op.output]
        return kernel(env[op.inputs[0]], fc.w_q, fc.bias_q, params)
    return kernel(*(env[name] for name in op.inputs), params)


def layer_forward_int_reference(layer, x_q: np.ndarray, h0_q: np.ndarray | None = None, observe=None) -> np.ndarray:
    """One layer over x_q [N, T, I], op by op, step by step; every state [N, T, H]. observe(name, value), when
    given, sees every op's integer output at every step (named as the step graph names them)."""
    N, T, I = x_q.shape
    h = np.zeros((N, layer.hidden_size), layer.qparams["h"].np_dtype) if h0_q is None else h0_q
    states = np.empty((N, T, layer.hidden_size), layer.qparams["h"].np_dtype)
    for t in range(T):
        env = {"x": x_q[:, t], "h": h}
        for op in layer.ops:
            env[op.output] = run_op(op, layer, env)
            if observe is not None:
                observe(op.output, env[op.output])
        h = states[:, t] = env["h_new"]
    return states


def head_forward_int(head, h_q: np.ndarray, observe=None) -> np.ndarray:
    """The quantized head (a QuantizedHead) on states [..., F] (any leading shape): each dense layer's
    FULLY_CONNECTED, and the TANH / LOGISTIC op after it where there is one. observe(name, value) sees each
    layer's integer output ``head{k}_out``."""
    dtype = head.input_q.dtype
    lead = h_q.shape[:-1]
    y = h_q.reshape(-1, h_q.shape[-1])
    for k, layer in enumerate(head.layers):
        y = KERNELS[(FULLY_CONNECTED, dtype)](y, layer.fc.w_q, layer.fc.bias_q, layer.prepared)
        if observe is not None:
            observe(f"head{k}_out", y.reshape(*lead, -1))
        if layer.act_op is not None:
            y = KERNELS[(layer.act_op, dtype)](y, layer.act_prepared)
    return y.reshape(*lead, -1)


def run_int_reference(qmodel, x_q: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The whole model op by op: (integer output, [states of each layer [N, T, H]]), as ``run_int``."""
    states, seq = [], x_q
    for layer in qmodel.layers:
        seq = layer_forward_int_reference(layer, seq)
        states.append(seq)
    top = seq if qmodel.per_step else seq[:, -1]
    return (top if qmodel.head is None else head_forward_int(qmodel.head, top)), states
