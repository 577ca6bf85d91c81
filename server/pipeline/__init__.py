"""The live analysis pipeline: detect -> link -> sliding windows -> change detection.

Each stage is a small module with plain array-in / array-out functions or a
stateful object fed one frame at a time, so a session (``server/service/session.py``)
only wires them together.
"""
