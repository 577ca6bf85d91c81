"""Array-level science of LiveSPT: simulators, classical estimators and bounds, networks.

Everything here takes and returns arrays (numpy or torch) in physical units
(micrometres, seconds, um^2/s) and never imports ``server``, gRPC or Java.
"""

__version__ = "0.1.0"
