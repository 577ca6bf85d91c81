"""Track id -> row table for per-track state kept in arrays, one row per live track.

The stages that keep state for every live track
(:class:`~livespt.server.pipeline.windows.WindowBuffers`,
:class:`~livespt.server.pipeline.changepoint_bank.ChangeDetectorBank`) store it in
arrays with one row per track, so that a frame's tracks are updated in a few numpy
operations. :class:`TrackSlots` is their one table of which track owns which
row; the owner keeps the arrays and sizes them to :attr:`TrackSlots.capacity`.

Method
------
A dict maps each live track id to its row, in least-recently-used order (insertion,
or :meth:`TrackSlots.touch`), and a list names the track of each row. Free rows are
a stack: the lowest row is taken first, and the row of a released track is the next
one reused. When no row is free the capacity doubles (the new rows come after the
old ones: existing rows keep their numbers, and the owner only has to extend its
arrays). With a bound ``max_tracks``, :meth:`TrackSlots.rows` marks each track it
sees most recently used and, when a new track takes the table past the bound,
evicts the least recently used one; an evicted track's row stays reserved (its id
still readable with :meth:`TrackSlots.id_of`, the row not reused) until
:meth:`TrackSlots.free_evicted`, so that the rows of one call are distinct and the
owner can finish the call with the evicted tracks' state. :meth:`TrackSlots.repack`
renumbers the live tracks ``0 .. n-1`` (least recently used first) for an owner that
shrinks its arrays.

Costs: :meth:`~TrackSlots.rows` is one dict look-up per id (amortized O(1) per new
track, doubling included), :meth:`~TrackSlots.release` and :meth:`~TrackSlots.touch`
O(1), :meth:`~TrackSlots.repack` O(capacity). Memory: about 100 bytes per live track
(dict entry) plus 8 bytes per row (id list) and per free row (free list); the
owner's arrays are the bulk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from livespt.models import _validate

# What TrackSlots.rows returns as ``new`` when every track is known (most frames):
# shared, and read-only.
_NONE_NEW = np.zeros(0, dtype=np.intp)
_NONE_NEW.flags.writeable = False


class TrackSlots:
    """Rows of the live tracks in per-track arrays: track id -> row, free rows, LRU bound.

    Parameters
    ----------
    capacity : int
        Rows at first, >= 1; doubled whenever a new track finds none free.
    max_tracks : int, optional
        Most live tracks; beyond it :meth:`rows` evicts the least recently used
        track. Default: no bound (and :meth:`rows` does not reorder known tracks).

    Attributes
    ----------
    max_tracks : int or None
        The bound, as given.
    evicted : int
        Tracks evicted so far because of ``max_tracks``.

    Notes
    -----
    See the module docstring for the method, costs and memory.
    """

    def __init__(self, capacity: int, max_tracks: int | None = None) -> None:
        cap = _validate.positive_int("capacity", capacity)
        self.max_tracks = (None if max_tracks is None
                           else _validate.positive_int("max_tracks", max_tracks))
        self.evicted = 0
        self._row: OrderedDict[Hashable, int] = OrderedDict()  # least recently used first
        self._ids: list[Hashable | None] = [None] * cap  # track of each row, None: free
        self._free: list[int] = list(range(cap - 1, -1, -1))  # lowest row last (taken first)
        self._reserved: list[int] = []  # rows of evicted tracks, until free_evicted

    @property
    def capacity(self) -> int:
        """Rows in the table (live, free or reserved): the owner's arrays need as many."""
        return len(self._ids)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._row

    def __iter__(self) -> Iterator[Hashable]:
        """The live track ids, least recently used first."""
        return iter(self._row)

    def get(self, track_id: Hashable) -> int | None:
        """Row of a live track, or None."""
        return self._row.get(track_id)

    def row(self, track_id: Hashable) -> int:
        """Row of a live track; KeyError if it is not in the table."""
        return self._row[track_id]

    def id_of(self, row: int) -> Hashable | None:
        """Track of a row (live or reserved), or None if the row is free."""
        return self._ids[row]

    def lookup(self, track_ids: Sequence[Hashable]) -> NDArray[np.intp]:
        """Rows of ``track_ids`` (-1 where not in the table); allocates nothing."""
        get = self._row.get
        return np.fromiter((get(t, -1) for t in track_ids), dtype=np.intp,
                           count=len(track_ids))

    def live_rows(self) -> NDArray[np.intp]:
        """Rows of the live tracks, least recently used first."""
        return np.fromiter(self._row.values(), dtype=np.intp, count=len(self._row))

    def rows(
        self, track_ids: Sequence[Hashable] | NDArray[np.integer]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Rows of ``track_ids`` in turn, taking free rows for tracks not in the table.

        With ``max_tracks``, each track becomes the most recently used as it comes,
        and every new track that takes the table past the bound evicts the least
        recently used one (which may be one given earlier in the same call: it is
        then evicted, and if it came again, it would be a new track). Evicted rows
        stay reserved until :meth:`free_evicted`.

        Parameters
        ----------
        track_ids : sequence of hashable, or ndarray of int, shape (K,)
            Track ids (an integer array is read as Python ints).

        Returns
        -------
        rows : ndarray of intp, shape (K,)
            Row of each track; the capacity may have grown.
        new : ndarray of intp, shape (N,)
            Positions in ``track_ids`` of the N tracks that were not in the table
            before this call, in order: the owner initializes the state of their
            rows, ``rows[new]``.
        """
        ids = track_ids.tolist() if isinstance(track_ids, np.ndarray) else track_ids
        row_of, get, take, bound = self._row, self._row.get, self._take, self.max_tracks
        out: list[int] = []
        new: list[int] = []
        for k, tid in enumerate(ids):
            r = get(tid)
            if r is None:
                r = take(tid)
                new.append(k)
                if bound is not None:
                    while len(row_of) > bound:
                        self._reserved.append(row_of.popitem(last=False)[1])
                        self.evicted += 1
            elif bound is not None:
                row_of.move_to_end(tid)
            out.append(r)
        return (np.array(out, dtype=np.intp),
                np.array(new, dtype=np.intp) if new else _NONE_NEW)

    def touch(self, track_id: Hashable) -> None:
        """Make a live track the most recently used (KeyError if not in the table)."""
        self._row.move_to_end(track_id)

    def release(self, track_id: Hashable) -> int | None:
        """Forget a track and free its row for reuse; return the row (None if unknown)."""
        r = self._row.pop(track_id, None)
        if r is not None:
            self._ids[r] = None
            self._free.append(r)
        return r

    def free_evicted(self) -> None:
        """Free the rows of the tracks evicted since the last call."""
        for r in self._reserved:
            self._ids[r] = None
            self._free.append(r)
        self._reserved.clear()

    def repack(self, capacity: int) -> NDArray[np.intp]:
        """Renumber the live tracks ``0 .. n-1`` (least recently used first) in ``capacity`` rows.

        Call with no evicted rows reserved (after :meth:`free_evicted`).

        Parameters
        ----------
        capacity : int
            Rows after the repacking, >= the live tracks.

        Returns
        -------
        ndarray of intp, shape (n,)
            Old row of each new row ``0 .. n-1``: the owner moves its arrays'
            rows ``keep`` to ``0 .. n-1`` (``new[:n] = old[keep]``).
        """
        n = len(self._row)
        if capacity < n or self._reserved:
            raise ValueError(f"cannot repack {n} live tracks (and {len(self._reserved)} "
                             f"reserved rows) into {capacity} rows")
        keep = self.live_rows()
        ids = list(self._row)
        for i, tid in enumerate(ids):
            self._row[tid] = i  # keeps the LRU order
        self._ids = [*ids, *([None] * (capacity - n))]
        self._free = list(range(capacity - 1, n - 1, -1))
        return keep

    def _take(self, track_id: Hashable) -> int:
        """A free row for a new track (doubling the capacity if none is free)."""
        if not self._free:
            old = len(self._ids)
            self._ids.extend([None] * old)
            self._free.extend(range(2 * old - 1, old - 1, -1))
        r = self._free.pop()
        self._row[track_id] = r
        self._ids[r] = track_id
        return r
