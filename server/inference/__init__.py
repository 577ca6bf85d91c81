"""Resident models and dynamic batching, shared by every session."""
