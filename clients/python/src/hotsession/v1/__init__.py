"""Generated protobuf and gRPC stubs for hotsession.v1 (run `make proto` to regenerate)."""
