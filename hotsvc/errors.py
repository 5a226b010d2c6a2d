"""Errors a caller can act on; the gRPC layer maps each kind to its status code."""


class ServiceError(Exception):
    """Base class: the message tells the caller what to do."""


class InvalidRequest(ServiceError):
    pass


class SessionNotFound(ServiceError):
    pass


class SessionBusy(ServiceError):
    """The session already has a stream attached."""


class CapacityExhausted(ServiceError):
    pass


class Draining(ServiceError):
    """The service is shutting down and takes no new work."""


class SpawnFailed(ServiceError):
    """Claude Code could not be started."""
