"""A batch split across worker processes (grukit.runtime.workers) gives the integers of one process."""

import pickle

import numpy as np
import pytest

import grukit
from grukit.runtime import workers as W

from gru_factory import random_inputs, random_model
from grukit.verify import assert_identical
from test_int_gru import CASES


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(W, "MIN_ROWS", 4)  # split even small test batches
    monkeypatch.setattr(W, "MIN_ROW_STEPS", 4)


@pytest.mark.parametrize("scheme", ["int8", "16x8"])
@pytest.mark.parametrize("case", CASES[1:3], ids=["lbr0", "stacked-every-step"])
def test_split_batch_equals_one_process(scheme, case, small_chunks):
    model = random_model(seed=20, **case)
    x = random_inputs(20, N=23, T=30, scale=2.0)  # 23 rows in 3 chunks of 8, 7, 8; 30 steps: several blocks
    q = grukit.quantize(model, x[:6], scheme=scheme)
    x_q = q.quantize_input(x)
    y1, states1 = q.run_int(x_q, workers=1)
    y3, states3 = q.run_int(x_q, workers=3)
    assert_identical(y3, y1, "output, 3 processes vs 1")
    for k, (a, b) in enumerate(zip(states3, states1)):
        assert_identical(a, b, f"layer {k} states, 3 processes vs 1")
    assert_identical(q.predict_int(x_q, workers=2), y1, "predict_int, 2 processes vs 1")
    assert_identical(q.predict(x, batch=16, workers=2), q.predict(x, workers=1), "predict")


def test_each_worker_keeps_models_apart(small_chunks):
    # Two models through the same workers, alternately: each request runs the model it names.
    x = random_inputs(21, N=12, T=8)
    qs = [grukit.quantize(random_model(seed=s), x, scheme="int8") for s in (21, 22)]
    expected = [q.predict_int(q.quantize_input(x), workers=1) for q in qs]
    for _ in range(2):
        for q, y in zip(qs, expected):
            assert_identical(q.predict_int(q.quantize_input(x), workers=2), y, q.float_model.name)


def test_a_worker_error_is_raised_in_the_caller():
    x = random_inputs(23, N=4, T=5)
    q = grukit.quantize(random_model(seed=23), x, scheme="int8")
    worker = W._Worker()
    try:
        token, blob = W._model_message(q)
        worker.send(("model", token, blob))
        worker.send(("run", token, q.quantize_input(x)[..., :2], False))  # 2 features where the model has 4
        reply = worker.receive()
        assert reply[0] == "error" and isinstance(reply[1], ValueError) and "must have 4 features" in str(reply[1])
        worker.send(("run", "unknown-model", q.quantize_input(x), False))
        assert worker.receive() == ("missing",)
    finally:
        worker.stop()


def test_a_dead_worker_is_reported_then_replaced(small_chunks):
    x = random_inputs(24, N=12, T=6)
    q = grukit.quantize(random_model(seed=24), x, scheme="16x8")
    x_q = q.quantize_input(x)
    expected = q.predict_int(x_q, workers=1)
    q.predict_int(x_q, workers=2)  # starts a worker
    W._workers[0].proc.kill()
    with pytest.raises(W.WorkerError, match="exited with code -9.*GRUKIT_WORKERS=1"):
        q.predict_int(x_q, workers=2)
    assert not W._workers  # all stopped: none can be trusted mid-protocol
    assert_identical(q.predict_int(x_q, workers=2), expected, "after a restart")


def test_small_batches_run_in_the_caller():
    W.stop_workers()
    x = random_inputs(25, N=4 * W.MIN_ROWS, T=3)  # many sequences, too few steps
    q = grukit.quantize(random_model(seed=25), x[:8], scheme="int8")
    q.predict_int(q.quantize_input(x), workers=8)
    assert not W._workers
    long = W.MIN_ROW_STEPS  # steps enough for one row per chunk
    assert W.chunks_for(2 * W.MIN_ROWS - 1, long, 8) == 1 and W.chunks_for(2 * W.MIN_ROWS, long, 8) == 2
    assert W.chunks_for(100 * W.MIN_ROWS, long, 3) == 3
    assert W.chunks_for(2 * W.MIN_ROW_STEPS, 1, 8) == 2  # one step: the sequence steps decide


def test_worker_count_from_argument_then_environment(monkeypatch):
    monkeypatch.setenv(W.WORKERS_ENV, "3")
    assert W.worker_count() == 3 and W.worker_count(5) == 5
    for bad in ("0", "two", "-1", "2.5"):
        monkeypatch.setenv(W.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match="GRUKIT_WORKERS must be a whole number"):
            W.worker_count()
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="workers must be a whole number"):
            W.worker_count(bad)
    monkeypatch.setenv(W.WORKERS_ENV, " ")  # set but empty: as if unset
    assert W.worker_count() >= 1


def test_pickles_leave_the_runtime_caches_out():
    x = random_inputs(26, N=4, T=5)
    q = grukit.quantize(random_model(seed=26), x, scheme="int8")
    before = pickle.dumps(q)
    q.predict_int(q.quantize_input(x))  # builds and caches the plans
    W._model_message(q)  # caches the worker message
    assert "_plans" in q.layers[0].__dict__ and "_worker_message" in q.__dict__
    again = pickle.loads(pickle.dumps(q))
    assert "_plans" not in again.layers[0].__dict__ and "_worker_message" not in again.__dict__
    assert len(pickle.dumps(q)) == len(before)
