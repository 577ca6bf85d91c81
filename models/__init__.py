"""Array-level science of LiveSPT: simulators, classical estimators and bounds, networks.

Everything here takes and returns arrays (numpy or torch) in physical units
(micrometres, seconds, um^2/s) and never imports ``livespt.server``, gRPC or Java.
"""

from livespt import __version__

__all__ = ["__version__"]
