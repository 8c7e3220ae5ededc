"""Random GRU models for tests: every shape, gate variant and head kind grukit supports."""

import numpy as np

from grukit.core.model import Dense, GRUDirection, GRULayer, GRUModel, Head


def random_direction(rng, I: int, H: int, scale: float = 1.0) -> GRUDirection:
    s = scale / np.sqrt(H)
    return GRUDirection(
        W=rng.uniform(-s, s, (3, H, I)), R=rng.uniform(-s, s, (3, H, H)),
        Wb=rng.uniform(-s, s, (3, H)), Rb=rng.uniform(-s, s, (3, H)),
    )


def random_model(seed=0, I=4, H=16, O=3, layers=1, lbr=1, per_step=False, head=True, scale=2.0,
                 hidden=(), activation="linear") -> GRUModel:
    """A GRU stack with uniform weights of about unit gain (scale 2 makes gates saturate sometimes).

    The head: ``hidden`` dense layers [(width, activation), ...] before the output layer of O units with
    ``activation``."""
    rng = np.random.default_rng(seed)
    lbrs = lbr if isinstance(lbr, (list, tuple)) else [lbr] * layers
    stack, n_in = [], I
    for k in range(layers):
        stack.append(GRULayer(random_direction(rng, n_in, H, scale), linear_before_reset=lbrs[k]))
        n_in = H
    dense, width = [], H
    for out, act in (*hidden, (O, activation)):
        # Unit gain, biases spread so that a ReLU keeps some units and drops others.
        dense.append(Dense(rng.uniform(-1, 1, (out, width)) * np.sqrt(3 / width), rng.uniform(-0.5, 0.5, out), act)
                     if hidden else Dense(rng.uniform(-1, 1, (out, width)) / np.sqrt(width),
                                          rng.uniform(-0.1, 0.1, out), act))
        width = out
    chain = Head(tuple(dense), "every_step" if per_step else "last_step")
    return GRUModel(layers=tuple(stack), head=chain if head else None, name=f"random{seed}")


def random_inputs(seed, N=8, T=20, I=4, scale=1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed + 1000).standard_normal((N, T, I))).astype(np.float32)
