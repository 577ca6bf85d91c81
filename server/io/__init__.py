"""File formats LiveSPT reads and writes, and the in-process Fiji/TrackMate bridge."""
