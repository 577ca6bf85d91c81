"""The gRPC service: server assembly, the servicer, stream runner, sessions and settings."""
