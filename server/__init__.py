"""LiveSPT application layer: command line, client, gRPC service and live pipeline.

Also resident models and batching, file formats and the Fiji bridge.
``livespt.server`` uses :mod:`livespt.models`; it holds everything that touches files,
processes or networks, while the array-level science stays in ``models``.
"""

from livespt import __version__

__all__ = ["__version__"]
