"""What the ONNX and torch.export loaders share around their graph walks.

Each loader walks its graph once under the guess that the input is batch-first; a walk that finds the
input's axes the other way round raises ``LayoutGuessWrong`` and the loader walks again time-major. A
finished walk has ``layers``, the head it read (``head_W``, ``head_b``, ``head_per_step``, ``activation``;
``head_W`` None without one), ``batch_first`` and ``output_axes``.
"""

from __future__ import annotations

from pathlib import Path

from grukit.export.source_runtime import source_meta
from grukit.core.model import Dense, GRUModel


class LayoutGuessWrong(Exception):
    """The graph input's axes are the other way round from the guess (batch-first vs time-major)."""


def walk_either_layout(walk_cls, graph):
    """``walk_cls(graph, batch_first=...)``, batch-first first, time-major if that guess was wrong."""
    try:
        return walk_cls(graph, batch_first=True)
    except LayoutGuessWrong:
        return walk_cls(graph, batch_first=False)


def walked_model(walk, path: Path, name: str | None) -> GRUModel:
    """The GRUModel a finished walk describes, read from the file at ``path``."""
    head = None
    if walk.head_W is not None:
        head = Dense(W=walk.head_W, b=walk.head_b, per_step=walk.head_per_step, activation=walk.activation)
    return GRUModel(layers=tuple(walk.layers), head=head, name=name or path.stem, source=str(path),
                    meta=source_meta(walk.batch_first, walk.output_axes))
