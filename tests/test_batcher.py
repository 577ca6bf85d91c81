"""Shared dynamic batcher: real threads, ordering and batching made deterministic with gates."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from livespt.server.inference.batcher import DynamicBatcher, split_tensors

WAIT = 10.0  # s: only a guard against hanging on failure, never a timed assertion


def _split_tensor(out, sizes):
    return list(torch.split(out, sizes))


def _tensor_batcher(run, **kw):
    return DynamicBatcher(run, concat=torch.cat, split=_split_tensor, size=len, **kw)


class Gated:
    """A ``run`` whose first call blocks until released, so later requests queue up.

    Records each batch's input (a copy) in call order.
    """

    def __init__(self, fn=lambda x: 2 * x):
        self.fn = fn
        self.entered = threading.Event()
        self.release = threading.Event()
        self.inputs: list = []

    def __call__(self, x):
        self.inputs.append(x.copy() if isinstance(x, np.ndarray) else x.clone())
        if len(self.inputs) == 1:
            self.entered.set()
            assert self.release.wait(WAIT)
        return self.fn(x)

    @property
    def sizes(self):
        return [len(x) for x in self.inputs]


def _start_gated(b, gate, first):
    """Submit ``first`` and wait until its batch is running (held at the gate)."""
    fut = b.submit(first)
    assert gate.entered.wait(WAIT)
    return fut


def test_concurrent_callers_each_get_their_own_result():
    n_threads, n_calls, max_batch = 16, 40, 64
    seen_sizes: list[int] = []

    def run(x):
        seen_sizes.append(len(x))
        return 2 * x

    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def caller(tid, b):
        rng = np.random.default_rng(tid)
        barrier.wait()
        try:
            for k in range(n_calls):
                n = int(rng.integers(1, 20))
                base = (tid * n_calls + k) * 100  # distinct values per call
                x = torch.arange(base, base + n, dtype=torch.float64)
                y = b(x, timeout=WAIT)
                assert torch.equal(y, 2 * x), (tid, k)
        except BaseException as e:
            errors.append(e)

    with _tensor_batcher(run, max_batch=max_batch, max_delay_ms=1.0) as b:
        threads = [threading.Thread(target=caller, args=(t, b)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not errors, errors[0]
        s = b.stats
    assert s["requests"] == n_threads * n_calls
    assert s["items"] == sum(seen_sizes)
    assert s["batches"] == len(seen_sizes)
    assert max(seen_sizes) <= max_batch
    assert s["max_batch_size"] == max(seen_sizes)
    assert s["errors"] == 0


def test_requests_queued_behind_a_running_batch_are_combined_in_order():
    gate = Gated()
    with _tensor_batcher(gate, max_batch=10, max_delay_ms=1.0) as b:
        f0 = _start_gated(b, gate, torch.tensor([-1.0]))
        xs = [torch.full((3,), float(k)) for k in range(8)]
        futs = [b.submit(x) for x in xs]  # all queued while the first batch runs
        gate.release.set()
        results = [f.result(WAIT) for f in futs]
        assert torch.equal(f0.result(WAIT), torch.tensor([-2.0]))
        s = b.stats
    for x, y in zip(xs, results, strict=True):
        assert torch.equal(y, 2 * x)
    # 3-item requests, at most 10 items: 3 requests per batch, the rest in the last.
    assert gate.sizes == [1, 9, 9, 6]
    assert torch.equal(gate.inputs[1], torch.cat(xs[:3]))  # FIFO
    assert torch.equal(gate.inputs[2], torch.cat(xs[3:6]))
    assert torch.equal(gate.inputs[3], torch.cat(xs[6:]))
    assert s["batches"] == 4
    assert s["requests"] == 9
    assert s["mean_batch_requests"] == pytest.approx(9 / 4)
    assert s["mean_batch_size"] == pytest.approx(25 / 4)
    assert s["max_batch_size"] == 9
    assert s["mean_queue_delay_ms"] >= 0


def test_max_batch_respected_and_oversized_request_runs_alone():
    gate = Gated()
    with _tensor_batcher(gate, max_batch=8, max_delay_ms=1.0) as b:
        f0 = _start_gated(b, gate, torch.zeros(1))
        sizes = [3, 20, 5, 4, 1, 8, 2]
        futs = [b.submit(torch.full((n,), float(k))) for k, n in enumerate(sizes)]
        gate.release.set()
        for k, (n, f) in enumerate(zip(sizes, futs, strict=True)):
            assert torch.equal(f.result(WAIT), torch.full((n,), 2.0 * k))
        f0.result(WAIT)
        assert b.stats["max_batch_size"] == 20
    # [3] cannot take the 20 (never split), which runs alone; 5 + 4 > 8; 4 + 1; 8; 2.
    assert gate.sizes == [1, 3, 20, 5, 5, 8, 2]


def test_exception_reaches_exactly_the_callers_of_its_batch():
    def run(x):
        if (x < 0).any():
            raise ValueError("negative input")
        return 2 * x

    gate = Gated(run)
    split = lambda out, sizes: np.split(out, np.cumsum(sizes)[:-1])  # noqa: E731
    b = DynamicBatcher(gate, concat=np.concatenate, split=split, size=len,
                       max_batch=4, max_delay_ms=1.0, name="np-batcher")
    with b:
        f0 = _start_gated(b, gate, np.ones(2))
        good1, bad = b.submit(np.arange(2.0)), b.submit(np.array([-1.0, 5.0]))  # one batch
        good2, good3 = b.submit(np.arange(2.0) + 10), b.submit(np.arange(2.0) + 20)  # next
        gate.release.set()
        np.testing.assert_array_equal(f0.result(WAIT), [2.0, 2.0])
        exc1, exc2 = good1.exception(WAIT), bad.exception(WAIT)
        assert isinstance(exc1, ValueError) and exc1 is exc2
        np.testing.assert_array_equal(good2.result(WAIT), [20.0, 22.0])
        np.testing.assert_array_equal(good3.result(WAIT), [40.0, 42.0])
        np.testing.assert_array_equal(b(np.array([1.0]), timeout=WAIT), [2.0])  # still works
        s = b.stats
    assert gate.sizes == [2, 4, 4, 1]
    assert s["errors"] == 1 and s["batches"] == 4


def test_split_returning_wrong_number_of_parts_fails_the_batch():
    gate = Gated()
    b = DynamicBatcher(gate, concat=torch.cat, split=lambda out, sizes: [out], size=len,
                       max_delay_ms=1.0)
    with b:
        f0 = _start_gated(b, gate, torch.ones(1))  # alone: one part for one request is right
        f1, f2 = b.submit(torch.ones(1)), b.submit(torch.ones(1))  # together: one part for two
        gate.release.set()
        assert torch.equal(f0.result(WAIT), torch.full((1,), 2.0))
        assert isinstance(f1.exception(WAIT), ValueError)
        assert f1.exception() is f2.exception()


def test_close_drains_queued_work_then_refuses_and_stops_the_thread():
    gate = Gated()
    b = _tensor_batcher(gate, max_batch=4, max_delay_ms=1.0, name="drain-test")
    f0 = _start_gated(b, gate, torch.zeros(1))
    xs = [torch.full((2,), float(k)) for k in range(10)]
    futs = [b.submit(x) for x in xs]
    closer = threading.Thread(target=b.close)
    closer.start()
    deadline = time.monotonic() + WAIT
    while not b.closed and time.monotonic() < deadline:  # closer has stopped the intake
        time.sleep(0.001)
    assert b.closed
    with pytest.raises(RuntimeError, match="drain-test"):
        b.submit(torch.ones(1))
    assert not any(f.done() for f in futs)  # still queued behind the gate
    gate.release.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert all(f.done() for f in futs)  # close() returned only after draining
    for x, f in zip(xs, futs, strict=True):
        assert torch.equal(f.result(0), 2 * x)
    f0.result(0)
    assert not b._thread.is_alive()
    assert "drain-test" not in [t.name for t in threading.enumerate()]
    b.close()  # idempotent
    with pytest.raises(RuntimeError, match="drain-test"):
        b(torch.ones(1))
    assert b.stats["requests"] == 11


def test_context_manager_closes():
    with _tensor_batcher(lambda x: x + 1, name="cm") as b:
        assert torch.equal(b(torch.zeros(3), timeout=WAIT), torch.ones(3))
    assert b.closed
    assert not b._thread.is_alive()
    with pytest.raises(RuntimeError, match="cm"):
        b.submit(torch.zeros(1))


def test_cancelled_request_is_left_out_of_its_batch():
    gate = Gated()
    with _tensor_batcher(gate, max_delay_ms=1.0) as b:
        _start_gated(b, gate, torch.zeros(1))
        keep, drop = b.submit(torch.ones(2)), b.submit(torch.full((5,), 7.0))
        assert drop.cancel()
        gate.release.set()
        assert torch.equal(keep.result(WAIT), torch.full((2,), 2.0))
        s = b.stats
    assert gate.sizes == [1, 2]
    assert s["requests"] == 2


def test_submit_async_from_concurrent_tasks():
    gate = Gated()

    async def main(b):
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(b.submit_async(torch.zeros(1)))
        assert await loop.run_in_executor(None, gate.entered.wait, WAIT)
        xs = [torch.arange(k, k + 3, dtype=torch.float32) for k in range(12)]
        tasks = [asyncio.ensure_future(b.submit_async(x)) for x in xs]
        await asyncio.sleep(0)  # let every task submit while the first batch is held
        gate.release.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        await first
        return xs, results

    with _tensor_batcher(gate, max_batch=4096, max_delay_ms=1.0) as b:
        xs, results = asyncio.run(main(b))
    for x, y in zip(xs, results, strict=True):
        assert torch.equal(y, 2 * x)
    assert gate.sizes == [1, 36]  # the 12 tasks' requests ran as one batch


def test_split_tensors():
    mean, log_sd = torch.arange(6.0), -torch.arange(6.0)
    parts = split_tensors((mean, log_sd), [2, 0, 4])
    assert len(parts) == 3
    assert [tuple(t.tolist() for t in p) for p in parts] == [
        ([0.0, 1.0], [0.0, -1.0]), ([], []), ([2.0, 3.0, 4.0, 5.0], [-2.0, -3.0, -4.0, -5.0])]
    with pytest.raises(ValueError, match="cannot be split"):
        split_tensors((mean, log_sd), [2, 3])


def test_split_tensors_with_a_model_like_run():
    def model(x):
        return x.sum(dim=1), x.mean(dim=1)

    gate = Gated(model)
    with DynamicBatcher(gate, concat=torch.cat, split=split_tensors, size=len) as b:
        _start_gated(b, gate, torch.zeros(1, 4))
        xs = [torch.randn(n, 4) for n in (1, 7, 3)]
        futs = [b.submit(x) for x in xs]
        gate.release.set()
        for x, f in zip(xs, futs, strict=True):
            mean, log_sd = f.result(WAIT)
            assert torch.allclose(mean, x.sum(dim=1))
            assert torch.allclose(log_sd, x.mean(dim=1))


@pytest.mark.parametrize("kw", [{"max_batch": 0}, {"max_delay_ms": -1.0},
                                {"max_delay_ms": float("nan")}])
def test_invalid_arguments(kw):
    with pytest.raises(ValueError):
        _tensor_batcher(lambda x: x, **kw)
