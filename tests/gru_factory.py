"""Random GRU models for tests: every shape, gate variant and head kind grukit supports."""

import numpy as np

from grukit.core.model import Dense, GRUDirection, GRULayer, GRUModel


def random_direction(rng, I: int, H: int, scale: float = 1.0) -> GRUDirection:
    s = scale / np.sqrt(H)
    return GRUDirection(
        W=rng.uniform(-s, s, (3, H, I)), R=rng.uniform(-s, s, (3, H, H)),
        Wb=rng.uniform(-s, s, (3, H)), Rb=rng.uniform(-s, s, (3, H)),
    )


def random_model(seed=0, I=4, H=16, O=3, layers=1, lbr=1, per_step=False, head=True, scale=2.0) -> GRUModel:
    """A GRU stack with uniform weights of about unit gain (scale 2 makes gates saturate sometimes)."""
    rng = np.random.default_rng(seed)
    lbrs = lbr if isinstance(lbr, (list, tuple)) else [lbr] * layers
    stack, n_in = [], I
    for k in range(layers):
        stack.append(GRULayer(random_direction(rng, n_in, H, scale), linear_before_reset=lbrs[k]))
        n_in = H
    dense = Dense(W=rng.uniform(-1, 1, (O, H)) / np.sqrt(H), b=rng.uniform(-0.1, 0.1, O), per_step=per_step)
    return GRUModel(layers=tuple(stack), head=dense if head else None, name=f"random{seed}")


def random_inputs(seed, N=8, T=20, I=4, scale=1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed + 1000).standard_normal((N, T, I))).astype(np.float32)
