"""The HTTP face (`--http-listen`): HotSession over the Connect protocol, and the seed's
plain routes, served by hypercorn in the service's own event loop. Needs the `http`
extra (connectrpc, hypercorn, starlette)."""
