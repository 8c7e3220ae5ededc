"""The integer runtime on every core: a batch's sequences split across worker processes.

Sequences are independent (every op of the step graph is row-wise), so a batch cut into row chunks, each
run by ``grukit.runtime.int_gru.run_here`` in its own process, gives exactly the integers of one run over the
whole batch; ``tests/test_workers.py`` compares them element for element. The calling process runs the
first chunk itself while worker processes run the others.

Why processes, and why these: a recurrent step is some 80 small NumPy calls, and two threads handing the
GIL to each other between them ran slower than one thread alone (measured: 2 threads x 128 sequences took
87-125 ms where one thread did both halves in 80). The workers are ``python -m grukit.runtime.workers``
subprocesses speaking pickle over their stdin / stdout, not ``multiprocessing`` ones: its spawn and
forkserver starts re-import the caller's ``__main__`` in every worker (re-running an unguarded script,
training included), and fork copies a process that may hold torch's, onnxruntime's or BLAS's threads.

Each worker runs with one BLAS thread and a glibc heap that keeps its freed pages (MALLOC_TRIM_THRESHOLD_,
MALLOC_TOP_PAD_): a fresh process otherwise returns and re-faults the step's ~100 KB arrays every call,
which measured 50% slower. Workers start on first use, stay for the process's life and exit when their
stdin closes (at exit, or when the parent dies).

How many processes compute, the caller included: ``workers=`` on ``run_int`` / ``predict_int`` /
``predict``, else the ``GRUKIT_WORKERS`` environment variable, else every CPU this process may use; a chunk
is never below ``MIN_ROWS`` sequences and ``MIN_ROW_STEPS`` sequence steps, so small batches (and every
streaming step) run in the caller alone.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import subprocess
import sys
import threading
import uuid

import numpy as np

from grukit.runtime.int_gru import run_here

WORKERS_ENV = "GRUKIT_WORKERS"
# A chunk has at least MIN_ROWS sequences and MIN_ROW_STEPS sequence steps: below, the pipe round trip and
# the shorter calls cost more than another core gives. Measured on 2 cores (I=16, H=64, one process vs two,
# medians of 5 interleaved rounds, int8 / 16x8): 64 x 100 steps took 12.0 / 10.4 ms split against 16.9 / 13.6
# whole, 128 x 64 12.5 / 9.4 against 16.8 / 13.8; but 64 x 64, 128 x 32 and 256 x 16 (2,048 sequence steps
# per chunk) lost 15-45% for both. Earlier: 2 x 16 x 100 lost, 2 x 128 x 5 lost.
MIN_ROWS = 32
MIN_ROW_STEPS = 3072
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_TOP_PAD_": str(64 << 20)}
MODELS_KEPT = 4  # models a worker keeps (plans built once each); the least recently used goes first


class WorkerError(RuntimeError):
    """A worker process died or answered out of protocol; the workers are restarted on the next call."""


def worker_count(requested: int | None = None) -> int:
    """Processes to compute in, this one included: ``requested``, else $GRUKIT_WORKERS, else the CPUs this
    process may run on."""
    if requested is None:
        text = os.environ.get(WORKERS_ENV, "").strip()
        if not text:
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a whole number >= 1 (1: run in this process), got {text!r}")
        return int(text)
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 1:
        raise ValueError(f"workers must be a whole number >= 1 (1: run in this process), got {requested!r}")
    return int(requested)


def chunks_for(rows: int, steps: int, workers: int) -> int:
    """How many row chunks a batch of ``rows`` sequences of ``steps`` steps is cut into (1: this process)."""
    return max(1, min(workers, rows // MIN_ROWS, rows * steps // MIN_ROW_STEPS))


class _Worker:
    def __init__(self):
        env = {**os.environ, **_WORKER_ENV}
        self.proc = subprocess.Popen([sys.executable, "-m", "grukit.runtime.workers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def send(self, message) -> None:
        try:
            pickle.dump(message, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise self._died() from e

    def receive(self):
        try:
            return pickle.load(self.proc.stdout)
        except EOFError as e:
            raise self._died() from e

    def _died(self) -> WorkerError:
        code = self.proc.wait()
        return WorkerError(f"grukit worker process {self.proc.pid} exited with code {code} (its error, if any, is "
                           f"above); set {WORKERS_ENV}=1 to run in this process")

    def stop(self, wait_s: float = 2.0) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(wait_s)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


_workers: list[_Worker] = []
_lock = threading.Lock()


def _started(n: int) -> list[_Worker]:
    while len(_workers) < n:
        _workers.append(_Worker())
    return _workers[:n]


def stop_workers() -> None:
    """Stop every worker process (they start again on the next parallel call)."""
    while _workers:
        _workers.pop().stop()


atexit.register(stop_workers)


def _model_message(model) -> tuple[str, bytes]:
    """(token, pickled model): made once per model object and cached on it (``__getstate__`` leaves caches out)."""
    cached = model.__dict__.get("_worker_message")
    if cached is None:
        cached = (uuid.uuid4().hex, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        object.__setattr__(model, "_worker_message", cached)
    return cached


def run_split(model, x_q: np.ndarray, chunks: int, want_states: bool):
    """``run_int`` of ``model`` over ``chunks`` row chunks of checked x_q [N, T, I]: the first in this process, the
    others in worker processes, joined in order. Returns (output, [states per layer] or None)."""
    bounds = np.linspace(0, x_q.shape[0], chunks + 1).round().astype(int)
    spans = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    token, blob = _model_message(model)
    with _lock:
        workers = _started(chunks - 1)
        try:
            for worker, span in zip(workers, spans[1:]):
                worker.send(("run", token, x_q[span], want_states))
            here = run_here(model, x_q[spans[0]], input_ahead=False)
            replies = [("ok", *here)]
            for worker, span in zip(workers, spans[1:]):
                reply = worker.receive()
                if reply[0] == "missing":  # first use of this model in that worker, or evicted since
                    worker.send(("model", token, blob))
                    worker.send(("run", token, x_q[span], want_states))
                    reply = worker.receive()
                replies.append(reply)
        except BaseException:
            # Interrupted or broken mid-protocol: a worker may still be computing or holding an unread
            # reply, so none of them can be trusted to answer the next request in order.
            stop_workers()
            raise
    for reply in replies:
        if reply[0] == "error":
            raise reply[1]
        if reply[0] != "ok":
            stop_workers()
            raise WorkerError(f"grukit worker answered {reply[0]!r} out of protocol")
    y = np.concatenate([r[1] for r in replies])
    if not want_states:
        return y, None
    return y, [np.concatenate(parts) for parts in zip(*(r[2] for r in replies))]


def _serve() -> None:
    """The worker's loop: requests from stdin, replies on stdout, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the reply stream
    models: dict[str, object] = {}
    while True:
        try:
            message = pickle.load(requests)
        except EOFError:
            return
        if message[0] == "model":
            _, token, blob = message
            models[token] = pickle.loads(blob)
            while len(models) > MODELS_KEPT:
                models.pop(next(iter(models)))
            continue
        _, token, x_q, want_states = message
        model = models.pop(token, None)
        if model is None:
            reply = ("missing",)
        else:
            models[token] = model  # most recently used last
            try:
                model.check_int_input(x_q, "integer input [N, T, I]")
                y, states = run_here(model, x_q, input_ahead=False)  # the other processes hold the other cores
                reply = ("ok", y, states if want_states else None)
            except Exception as e:  # noqa: BLE001  (sent to the caller, who raises it)
                reply = ("error", e)
        try:
            blob = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001  (an exception that cannot be pickled)
            blob = pickle.dumps(("error", RuntimeError(f"in a grukit worker: {reply[1]!r} ({e})")))
        replies.write(blob)
        replies.flush()


if __name__ == "__main__":
    _serve()
