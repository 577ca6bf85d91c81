"""Block-wise linking of a stream with a whole-block linker (server/pipeline/block_link.py).

The whole-block linker here is LiveSPT's own online linker run over the block's frames
(deterministic, gap closing), so block-wise results can be compared with one run over
the whole stream; TrackMate's LAP tracker as the block linker is tested in
``tests/test_trackmate.py``.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from livespt.server.pipeline.block_link import BlockLinker
from livespt.server.pipeline.link import LinkerConfig, OnlineLinker

MAX_GAP = 2


def online_link_block(frames: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Links of a block: the online linker over its frames in order."""
    linker = OnlineLinker(LinkerConfig(max_distance_um=1.0, max_gap_frames=MAX_GAP))
    last: dict[int, int] = {}
    edges = []
    for f in np.unique(frames):
        rows = np.flatnonzero(frames == f)
        ids = linker.link(int(f), xy[rows])
        for r, t in zip(rows.tolist(), ids.tolist(), strict=True):
            if t in last:
                edges.append((last[t], r))
            last[t] = r
    return np.asarray(edges, dtype=np.int64).reshape(-1, 2)


def sparse_stream(n_frames: int = 130, n_particles: int = 12, seed: int = 0,
                  drop: float = 0.08) -> list[np.ndarray]:
    """Well-separated Brownian particles (steps << spacing), some detections missing."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(3)), -1).reshape(-1, 2) * 6.0
    pos = grid[:n_particles].astype(float) + 2.0
    out = []
    for _ in range(n_frames):
        pos = pos + rng.normal(0, 0.12, pos.shape)
        keep = rng.random(n_particles) > drop
        out.append(pos[keep].copy())
    return out


def link_keys(frames: list[tuple[int, np.ndarray, np.ndarray]]) -> set:
    """Links as pairs of (frame, x, y) keys: consecutive points of each track."""
    by_id: dict[int, list] = {}
    for f, ids, xy in frames:
        for t, (x, y) in zip(ids.tolist(), xy.tolist(), strict=True):
            by_id.setdefault(t, []).append((f, round(x, 9), round(y, 9)))
    return {(a, b) for pts in by_id.values() for a, b in pairwise(pts)}


def run_blocks(stream: list[np.ndarray], block: int, overlap: int) -> list:
    bl = BlockLinker(online_link_block, block, overlap, MAX_GAP)
    out = []
    for f, xy in enumerate(stream):
        out += [(r.index, r.ids, r.xy_um) for r in bl.add(f, xy, payload=f)]
    out += [(r.index, r.ids, r.xy_um) for r in bl.finish()]
    return out


def run_whole(stream: list[np.ndarray]) -> list:
    linker = OnlineLinker(LinkerConfig(max_distance_um=1.0, max_gap_frames=MAX_GAP))
    return [(f, linker.link(f, xy), xy) for f, xy in enumerate(stream)]


@pytest.mark.parametrize(("block", "seed"), [(1, 0), (7, 1), (20, 2), (64, 3)])
def test_blocks_give_the_links_of_one_whole_run(block: int, seed: int) -> None:
    stream = sparse_stream(seed=seed)
    blocks = run_blocks(stream, block, overlap=MAX_GAP + 2)
    whole = run_whole(stream)
    # Every frame released once, in order, with all its spots.
    assert [f for f, _, _ in blocks] == list(range(len(stream)))
    assert all(len(ids) == len(xy) for _, ids, xy in blocks)
    want, got = link_keys(whole), link_keys(blocks)
    assert got == want
    # Links across block borders, gap links included, are among them.
    borders = {(a, b) for a, b in want if a[0] // block != b[0] // block}
    gaps = {(a, b) for a, b in want if b[0] - a[0] > 1}
    assert borders and gaps and borders <= got and gaps <= got
    # Track ids are consistent: one spot per frame per id.
    for _, ids, _ in blocks:
        assert len(set(ids.tolist())) == len(ids)


def test_an_overlap_shorter_than_the_gap_reach_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap_frames"):
        BlockLinker(online_link_block, 10, MAX_GAP, MAX_GAP)


def test_release_timing_payloads_and_ended_tracks() -> None:
    bl = BlockLinker(online_link_block, 3, 3, MAX_GAP)
    pts = [np.array([[1.0, 1.0]]), np.array([[1.1, 1.0]]), np.zeros((0, 2)),
           np.array([[1.2, 1.1], [8.0, 8.0]])]
    assert bl.add(0, pts[0], "a") == [] and bl.add(1, pts[1], "b") == []
    released = bl.add(2, pts[2], "c")
    assert [(r.index, r.payload, r.ids.tolist()) for r in released] == [
        (0, "a", [0]), (1, "b", [0]), (2, "c", [])]
    assert bl.pending == 0
    assert bl.add(3, pts[3], "d") == []
    last = bl.finish()
    assert [(r.index, r.ids.tolist()) for r in last] == [(3, [0, 1])]  # 0 continues
    assert bl.ended(5) == []            # last seen at 3: may continue up to 3 + 2 + 1
    assert bl.ended(6) == [0, 1]
    assert bl.ended(9) == []            # reported once
    with pytest.raises(ValueError, match="not after"):
        bl.add(3, pts[0])
