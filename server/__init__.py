"""LiveSPT application layer: command line, file I/O, and (soon) the gRPC server.

``server`` uses :mod:`models`; it holds everything that touches files, processes
or networks, while the array-level science stays in ``models``.
"""

__version__ = "0.1.0"
