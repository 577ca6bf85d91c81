"""File formats LiveSPT reads and writes."""
