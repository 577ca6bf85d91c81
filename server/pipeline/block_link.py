"""Linking a live stream with a whole-movie tracker: overlapping blocks stitched by spot identity.

Trackers such as TrackMate's LAP tracker have no incremental mode: they link a
whole set of frames at once. :class:`BlockLinker` feeds them a live stream in
blocks: frames are buffered until ``block_frames`` new ones have arrived; the
block is then linked together with the last ``overlap_frames`` frames already
released, and the new frames are released with their track ids.

Stitching: a spot keeps its identity across blocks (the same detection, by row),
so a track of the new block that passes through released spots continues the
track of its *latest* released spot, if that spot is still the end of its track
(nothing released after it) and no other track of the block claimed it first; a
track that passes through no released spot, or whose claim fails, gets a new
id. Released frames are final: a block may link the overlap differently, but only
its links into new frames are used. With ``overlap_frames > max_gap_frames``
every link across a block border (gap links included) is seen by the block that
makes it.

Latency: a frame is released ``block_frames`` frames after its block started at
the latest; :meth:`BlockLinker.finish` releases the rest at the end of a stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livespt.models import _validate

LinkBlock = Callable[[NDArray[np.int64], NDArray[np.float64]], NDArray[np.int64]]
"""Links one block: (frame of each spot (N,), positions in um (N, 2)) -> edges (E, 2) of
spot rows, each from an earlier to a later spot; every spot in at most one edge each way."""


@dataclass
class Released:
    """One frame released by the block linker.

    Attributes
    ----------
    index : int
        Frame index.
    ids : ndarray of int, shape (K,)
        Track id of each spot, in the order the spots were added.
    xy_um : ndarray, shape (K, 2)
        The spots' positions as added.
    payload : object
        What was added with the frame (e.g. the rest of its detections).
    """

    index: int
    ids: NDArray[np.int64]
    xy_um: NDArray[np.float64]
    payload: Any


class BlockLinker:
    """Links a stream in overlapping blocks with a whole-block linker.

    Parameters
    ----------
    link_block : callable
        The whole-block linker (:data:`LinkBlock`).
    block_frames : int
        New frames per block, >= 1.
    overlap_frames : int
        Released frames linked again with each block, >= ``max_gap_frames + 1``.
    max_gap_frames : int
        Most frames a track may skip (the block linker's gap closing), >= 0; sets
        when a track has ended (:meth:`ended`).
    """

    def __init__(self, link_block: LinkBlock, block_frames: int, overlap_frames: int,
                 max_gap_frames: int) -> None:
        self._link = link_block
        self.block_frames = _validate.positive_int("block_frames", block_frames)
        self.max_gap_frames = _validate.positive_int("max_gap_frames", max_gap_frames,
                                                     minimum=0)
        self.overlap_frames = _validate.positive_int("overlap_frames", overlap_frames,
                                                     minimum=self.max_gap_frames + 1)
        # Buffered frames, oldest first: released ones (ids set) then pending ones.
        self._frames: list[Released] = []
        self._n_pending = 0
        self._next_id = 0
        # Per live track: (frame, row) of its latest released spot.
        self._end: dict[int, tuple[int, int]] = {}
        self._last_index: int | None = None
        self.n_blocks = 0

    @property
    def pending(self) -> int:
        """Frames added but not yet released."""
        return self._n_pending

    def add(self, index: int, xy_um: NDArray[np.float64], payload: Any = None) -> list[Released]:
        """Add one frame's spots; return the frames released by this call (oldest first).

        Parameters
        ----------
        index : int
            Frame index, greater than the previous one.
        xy_um : ndarray, shape (K, 2)
            Spot positions, um.
        payload : object
            Returned with the frame when it is released.
        """
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(f"frame index {index} is not after {self._last_index}")
        self._last_index = index
        xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
        self._frames.append(Released(index, np.full(len(xy), -1, np.int64), xy, payload))
        self._n_pending += 1
        if self._n_pending >= self.block_frames:
            return self._run()
        return []

    def finish(self) -> list[Released]:
        """Link and release every pending frame (end of the stream)."""
        return self._run() if self._n_pending else []

    def ended(self, frame: int) -> list[int]:
        """Forget and return the tracks that can no longer continue after ``frame``.

        A track whose latest released spot is at frame ``s`` can be continued up to
        frame ``s + max_gap_frames + 1``.
        """
        gone = sorted(t for t, (s, _) in self._end.items()
                      if frame >= s + self.max_gap_frames + 1)
        for t in gone:
            del self._end[t]
        return gone

    def _run(self) -> list[Released]:
        frames = self._frames
        n_old = len(frames) - self._n_pending
        sizes = np.array([len(f.ids) for f in frames], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        frame_of = np.repeat(np.array([f.index for f in frames], dtype=np.int64), sizes)
        xy = (np.concatenate([f.xy_um for f in frames]) if sizes.sum()
              else np.zeros((0, 2)))
        edges = np.asarray(self._link(frame_of, xy), dtype=np.int64).reshape(-1, 2)
        self.n_blocks += 1
        nxt: dict[int, int] = {}
        has_prev: set[int] = set()
        for a, b in edges.tolist():
            if frame_of[a] > frame_of[b]:
                a, b = b, a
            if a in nxt or b in has_prev:
                continue  # a split or merge: keep the first link only (paths are linear)
            nxt[a] = b
            has_prev.add(b)
        # Frame position (in `frames`) and row of every spot.
        pos = np.repeat(np.arange(len(frames)), sizes)
        row = np.arange(int(sizes.sum())) - starts[pos]
        released = starts[n_old]  # spots before this are released
        claimed: set[int] = set()
        for s0 in range(int(sizes.sum())):
            if s0 in has_prev:
                continue
            path = [s0]
            while path[-1] in nxt:
                path.append(nxt[path[-1]])
            old = [s for s in path if s < released]
            new = [s for s in path if s >= released]
            if not new:
                continue
            tid = -1
            if old:
                e = old[-1]
                f = frames[int(pos[e])]
                owner = int(f.ids[row[e]])
                if owner not in claimed and self._end.get(owner) == (f.index, int(row[e])):
                    tid = owner
            if tid < 0:
                tid = self._next_id
                self._next_id += 1
            claimed.add(tid)
            for s in new:
                frames[int(pos[s])].ids[row[s]] = tid
            last = new[-1]
            self._end[tid] = (frames[int(pos[last])].index, int(row[last]))
        out = frames[n_old:]
        self._n_pending = 0
        self._frames = frames[-self.overlap_frames:]
        return out
