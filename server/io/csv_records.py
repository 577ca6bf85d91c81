"""CSV files of analysis records: ``tracks.csv``, ``estimates.csv``, ``changes.csv``.

The server persists every session to its output directory as records are
produced (so a client that disconnects loses nothing), and the client writes
the same files from the updates it receives, with this one writer.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

from livespt.server.io import strict_json
from livespt.server.pipeline.records import RECORD_TYPES, Record


def columns(record_type: type) -> list[str]:
    """Column names of a record type, in file order."""
    return [f.name for f in fields(record_type)]


class RecordWriter:
    """Appends records to ``tracks.csv``, ``estimates.csv`` and ``changes.csv`` in a folder.

    Each file is created with its header at once (so an empty session still has
    well-formed files) and flushed after every :meth:`write` call, so whatever was
    computed is on disk even if the process is killed.

    Parameters
    ----------
    out_dir : str or Path
        The session's output directory (created if needed).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[type, IO[str]] = {}
        self._writers: dict[type, Any] = {}
        self._getters: dict[type, Any] = {}
        self.counts: dict[str, int] = {}
        for rt in RECORD_TYPES:
            f = open(self.out_dir / rt.FILE, "w", newline="")  # kept open: appended per frame
            w = csv.writer(f)
            w.writerow(columns(rt))
            f.flush()
            self._files[rt] = f
            self._writers[rt] = w
            self._getters[rt] = attrgetter(*columns(rt))
            self.counts[rt.FILE] = 0

    def write(self, records: Sequence[Record]) -> None:
        """Append records of any of the three types, then flush the touched files."""
        by_type: dict[type, list[Record]] = {}
        for r in records:
            by_type.setdefault(type(r), []).append(r)
        for rt, rs in by_type.items():
            # attrgetter, not dataclasses.astuple (which deep-copies every value);
            # csv writes floats with repr: infinite bounds appear as "inf".
            self._writers[rt].writerows(map(self._getters[rt], rs))
            self.counts[rs[0].FILE] += len(rs)
            self._files[rt].flush()

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` (atomically: a reader never sees half a file)."""
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(strict_json.dumps(summary, indent=2))
        tmp.replace(path)
        return path

    def close(self) -> None:
        """Close the CSV files (idempotent)."""
        for f in self._files.values():
            if not f.closed:
                f.close()
