"""A shared dynamic batcher: many callers' small requests, one model forward pass per batch.

The server holds one model and many sessions, each with its own worker thread
that has, per frame, a few windows to estimate. Rather than each session
running its own small forward pass, every session submits its request to one
:class:`DynamicBatcher`; a single background thread gathers the waiting
requests, concatenates them, runs the model once and hands each caller its
own slice of the output.

The batcher is generic: it knows nothing of tensors or models. The caller
supplies ``run`` (the forward pass), ``concat`` (join several inputs along the
batch axis), ``split`` (cut the output back into per-request parts) and
``size`` (the number of items of one input). For the diffusion model these are
``model``, ``models.vit.inputs.concat_inputs``, :func:`split_tensors` and
``len``.

Examples
--------
>>> import torch
>>> with DynamicBatcher(lambda x: (2 * x,), concat=torch.cat, split=split_tensors,
...                     size=len) as b:
...     (y,) = b(torch.ones(3))
>>> y.tolist()
[2.0, 2.0, 2.0]
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

In = TypeVar("In")
Out = TypeVar("Out")

_STOP = object()
"""Queued by :meth:`DynamicBatcher.close` behind every accepted request."""


@dataclass
class _Request(Generic[In, Out]):
    item: In
    size: int  # items
    submitted: float  # time.perf_counter(), s
    future: Future[Out] = field(default_factory=Future)


class DynamicBatcher(Generic[In, Out]):
    """Run ``run`` on batches gathered from concurrent callers, one call per batch.

    One background thread takes the oldest waiting request, then keeps taking
    more (first in, first out) until the batch holds ``max_batch`` items or
    ``max_delay_ms`` has passed since the first one was taken; requests
    already waiting when the delay runs out are still added, up to
    ``max_batch``, since including them costs no extra wait. The batch is
    joined with ``concat``, run with one call of ``run``, cut with ``split``
    and each caller's future completed with its own part.

    A request is never split: one that would take the batch past
    ``max_batch`` waits (at the head of the queue) for the next batch, and a
    single request larger than ``max_batch`` runs alone, as one batch larger
    than ``max_batch``.

    If ``concat``, ``run`` or ``split`` raises, every caller of that batch gets
    the exception and the batcher goes on with later requests. A future
    cancelled before its batch starts is left out of the batch.

    Parameters
    ----------
    run : callable
        The batched computation, e.g. a model's forward pass. Called only
        from the batcher's thread, one batch at a time. Must not submit to
        the same batcher and wait (that would deadlock).
    concat : callable
        Joins a list of inputs, in request order, into one.
    split : callable
        ``split(out, sizes)`` cuts the output of ``run`` into one part per
        request, ``sizes`` being the requests' sizes (items) in order; must
        return ``len(sizes)`` parts.
    size : callable
        Number of items of one input (called in the submitting thread).
    max_batch : int, default 4096
        Most items per batch (see above for larger single requests).
    max_delay_ms : float, default 2.0
        Longest time (ms) the first request of a batch waits for others to
        join it. 0 batches only what is already waiting.
    name : str, default "batcher"
        Names the thread and appears in error messages.

    Notes
    -----
    Call :meth:`close` (or use the batcher as a context manager): it runs what
    is queued and stops the thread. The thread is a daemon, so a batcher never
    closed does not keep the interpreter alive, but requests still queued at
    exit are lost.
    """

    def __init__(
        self,
        run: Callable[[In], Out],
        *,
        concat: Callable[[list[In]], In],
        split: Callable[[Out, list[int]], list[Out]],
        size: Callable[[In], int],
        max_batch: int = 4096,
        max_delay_ms: float = 2.0,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 item, got {max_batch}")
        if not max_delay_ms >= 0:
            raise ValueError(f"max_delay_ms must be >= 0 ms, got {max_delay_ms}")
        self._run = run
        self._concat = concat
        self._split = split
        self._size = size
        self.max_batch = int(max_batch)
        self.max_delay_ms = float(max_delay_ms)
        self.name = name

        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _closed and the order of puts vs. _STOP
        self._closed = False
        self._carry: _Request[In, Out] | None = None  # worker thread only

        self._stats_lock = threading.Lock()
        self._n_batches = 0
        self._n_errors = 0
        self._n_requests = 0
        self._n_items = 0
        self._max_items = 0
        self._delay_sum_s = 0.0

        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- callers

    def submit(self, item: In) -> Future[Out]:
        """Queue one request.

        Parameters
        ----------
        item : In
            The input; its size (items) is measured here with ``size``.

        Returns
        -------
        concurrent.futures.Future
            Completed with this request's part of the output, or with the
            exception raised for its batch.

        Raises
        ------
        RuntimeError
            If the batcher is closed.
        ValueError
            If ``size(item)`` is negative.
        """
        n = int(self._size(item))
        if n < 0:
            raise ValueError(f"{self.name}: size(item) is negative ({n} items)")
        req: _Request[In, Out] = _Request(item, n, time.perf_counter())
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._queue.put(req)
        return req.future

    def __call__(self, item: In, timeout: float | None = None) -> Out:
        """Submit and wait for the result.

        Parameters
        ----------
        item : In
            The input.
        timeout : float, optional
            Longest wait (s); None waits for ever.

        Returns
        -------
        Out
            This request's part of the output.

        Raises
        ------
        TimeoutError
            If the result is not ready in ``timeout`` seconds (the request
            stays queued).
        """
        return self.submit(item).result(timeout)

    async def submit_async(self, item: In) -> Out:
        """Submit from an asyncio event loop and await the result without blocking the loop.

        Cancelling the awaiting task cancels the request if its batch has not
        started yet.
        """
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        """Run every request already queued, then stop the thread.

        Later :meth:`submit` calls raise :class:`RuntimeError`. Idempotent;
        blocks until the queued work is done (except when called from ``run``
        itself, which only stops the intake).
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> DynamicBatcher[In, Out]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def stats(self) -> dict[str, float]:
        """Counters since creation (cancelled requests excluded).

        Returns
        -------
        dict
            ``batches`` (calls of ``run``), ``errors`` (batches that raised),
            ``requests``, ``items``, ``mean_batch_size`` (items per batch),
            ``mean_batch_requests`` (requests per batch), ``max_batch_size``
            (items) and ``mean_queue_delay_ms`` (from submit to the start of
            its batch, ms, averaged over requests). Means are NaN before the
            first batch.
        """
        with self._stats_lock:
            b, r = self._n_batches, self._n_requests
            nan = float("nan")
            return {
                "batches": b,
                "errors": self._n_errors,
                "requests": r,
                "items": self._n_items,
                "mean_batch_size": self._n_items / b if b else nan,
                "mean_batch_requests": r / b if b else nan,
                "max_batch_size": self._max_items,
                "mean_queue_delay_ms": 1e3 * self._delay_sum_s / r if r else nan,
            }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"DynamicBatcher(name={self.name!r}, max_batch={self.max_batch}, "
                f"max_delay_ms={self.max_delay_ms}, {state})")

    # ----------------------------------------------------------------- worker

    def _loop(self) -> None:
        stopping = False
        while True:
            if self._carry is not None:
                first, self._carry = self._carry, None
            elif stopping:
                return
            else:
                got = self._queue.get()
                if got is _STOP:
                    return
                first = got
            batch, stopping = self._collect(first)
            self._run_batch(batch)

    def _collect(self, first: _Request[In, Out]) -> tuple[list[_Request[In, Out]], bool]:
        """Gather requests behind ``first``; also says whether the stop mark was met."""
        batch = [first]
        total = first.size
        deadline = time.perf_counter() + self.max_delay_ms / 1e3
        while total < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                if remaining > 0:
                    got = self._queue.get(timeout=remaining)
                else:  # delay spent: take only what is already waiting
                    got = self._queue.get_nowait()
            except queue.Empty:
                break
            if got is _STOP:
                return batch, True  # nothing can be queued behind the stop mark
            if total + got.size > self.max_batch:
                self._carry = got  # heads the next batch: FIFO kept, never split
                break
            batch.append(got)
            total += got.size
        return batch, False

    def _run_batch(self, batch: list[_Request[In, Out]]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        start = time.perf_counter()
        sizes = [r.size for r in live]
        failed = False
        try:
            out = self._run(self._concat([r.item for r in live]))
            parts = self._split(out, sizes)
            if len(parts) != len(live):
                raise ValueError(f"{self.name}: split returned {len(parts)} parts "
                                 f"for {len(live)} requests")
        except BaseException as exc:  # the callers get it; the batcher goes on
            failed = True
            for r in live:
                r.future.set_exception(exc)
        with self._stats_lock:  # before the results, so callers see their batch counted
            self._n_batches += 1
            self._n_errors += failed
            self._n_requests += len(live)
            self._n_items += sum(sizes)
            self._max_items = max(self._max_items, sum(sizes))
            self._delay_sum_s += sum(start - r.submitted for r in live)
        if not failed:
            for r, part in zip(live, parts, strict=True):
                r.future.set_result(part)


def split_tensors(out: tuple[Tensor, ...], sizes: list[int]) -> list[tuple[Tensor, ...]]:
    """Cut a tuple of batch-first tensors into one tuple per request.

    The ``split`` for a model that returns, e.g., ``(mean, log_sd)``, each of
    shape (B,). The parts are views of ``out`` (no copy).

    Parameters
    ----------
    out : tuple of Tensor
        Tensors with the batch on axis 0, all of length ``sum(sizes)``.
    sizes : list of int
        Items per request, in order.

    Returns
    -------
    list of tuple of Tensor
        ``len(sizes)`` tuples, the k-th holding rows
        ``sum(sizes[:k]) : sum(sizes[:k + 1])`` of each tensor.

    Raises
    ------
    ValueError
        If a tensor's length differs from ``sum(sizes)``.
    """
    total = sum(sizes)
    for t in out:
        if t.shape[0] != total:
            raise ValueError(f"tensor of length {t.shape[0]} cannot be split into {sizes} "
                             f"(sum {total})")
    if not out:
        return [() for _ in sizes]
    pieces = [torch.split(t, sizes, dim=0) for t in out]
    return [tuple(p[k] for p in pieces) for k in range(len(sizes))]
