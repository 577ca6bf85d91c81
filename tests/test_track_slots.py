"""The track id -> row table shared by the window buffers and the change detector bank."""

from __future__ import annotations

import numpy as np
import pytest

from livespt.server.pipeline.track_slots import TrackSlots


def test_rows_allocate_lowest_first_reuse_released_and_double() -> None:
    t = TrackSlots(2)
    rows, new = t.rows([10, 11])
    assert rows.tolist() == [0, 1] and new.tolist() == [0, 1] and t.capacity == 2
    rows, new = t.rows(np.array([11, 12]))  # no free row: the capacity doubles
    assert rows.tolist() == [1, 2] and new.tolist() == [1] and t.capacity == 4
    assert t.release(10) == 0 and t.release(10) is None and 10 not in t
    rows, new = t.rows([13, 14])  # the released row first, then the lowest free one
    assert rows.tolist() == [0, 3] and new.tolist() == [0, 1]
    assert len(t) == 4 and t.id_of(0) == 13 and t.row(12) == 2 and t.get(99) is None
    assert t.lookup([12, 99]).tolist() == [2, -1]
    with pytest.raises(KeyError):
        t.row(99)


def test_bound_evicts_least_recently_used_and_reserves_rows_until_freed() -> None:
    t = TrackSlots(4, max_tracks=2)
    t.rows(["a", "b"])
    t.touch("a")  # "b" is now the least recently used
    rows, new = t.rows(["c", "b"])  # "c" evicts "b", which then comes back as new
    assert list(t) == ["c", "b"] and t.evicted == 2 and new.tolist() == [0, 1]
    assert len(set(rows.tolist()) | {0, 1}) == 4  # the evicted rows are not reused yet
    assert t.id_of(0) == "a" and t.id_of(1) == "b"  # reserved: still readable
    with pytest.raises(ValueError, match="reserved"):
        t.repack(4)
    t.free_evicted()
    assert t.id_of(0) is None and t.id_of(1) is None
    keep = t.repack(2)  # live tracks renumbered 0.., least recently used first
    assert keep.tolist() == rows.tolist() and t.capacity == 2
    assert [t.row(k) for k in ("c", "b")] == [0, 1] and list(t) == ["c", "b"]


def test_live_rows_and_validation() -> None:
    t = TrackSlots(8)
    t.rows([5, 6, 7])
    t.release(6)
    assert t.live_rows().tolist() == [0, 2]
    with pytest.raises(ValueError, match="capacity"):
        TrackSlots(0)
    with pytest.raises(ValueError, match="max_tracks"):
        TrackSlots(4, max_tracks=0)
