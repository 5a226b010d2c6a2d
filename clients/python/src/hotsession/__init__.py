"""Client for hotsvc's hotsession.v1 gRPC API; generated stubs live in hotsession.v1."""
