"""The gRPC boundary: server assembly, the thin servicer, converters, error mapping."""
