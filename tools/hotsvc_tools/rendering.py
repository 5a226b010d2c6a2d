"""The shipped load balancer configs for given replicas: deploy/nginx/hotsvc.conf and
deploy/haproxy/hotsvc.cfg with only their addresses (and log target) changed, and the
HAProxy config of deploy/kubernetes/balancer.yaml.

Rendering refuses a shipped file whose shape it does not recognise (one listen/bind line,
a run of `server` lines), so a change there fails loudly instead of going untested.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from hotsvc_tools.paths import REPO

NGINX_CONF = REPO / "deploy" / "nginx" / "hotsvc.conf"
HAPROXY_CFG = REPO / "deploy" / "haproxy" / "hotsvc.cfg"

# (name, HOST:PORT) of each replica, in the order the balancer lists them.
Upstreams = Sequence[tuple[str, str]]


class RenderError(ValueError):
    """The shipped config no longer has the shape the renderer replaces."""


def _replace_one(pattern: str, replacement: str, text: str, what: str) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise RenderError(f"expected one {what} in the shipped config, found {count}")
    return result


def _replace_servers(pattern: str, lines: Sequence[str], text: str, what: str) -> str:
    """Replace the one run of consecutive `server` lines with `lines` (same indent)."""
    found = list(re.finditer(pattern, text, flags=re.MULTILINE))
    if not found:
        raise RenderError(f"no {what} lines in the shipped config")
    first, last = found[0], found[-1]
    between = text[first.start() : last.end()]
    if len(between.splitlines()) != len(found):
        raise RenderError(f"the {what} lines of the shipped config are not one block")
    indent = first.group("indent")
    return text[: first.start()] + "\n".join(indent + line for line in lines) + text[last.end() :]


def render_nginx(text: str, listen: str, upstreams: Upstreams, access_log: Path) -> str:
    """deploy/nginx/hotsvc.conf for these replicas, listening on `listen`."""
    server = r"^(?P<indent>[ \t]*)server[ \t]+[^\s{]+(?P<params>[^;\n]*);[ \t]*$"
    match = re.search(server, text, flags=re.MULTILINE)
    params = match.group("params") if match else ""
    lines = [f"server {address}{params};" for _, address in upstreams]
    text = _replace_servers(server, lines, text, "upstream server")
    text = _replace_one(
        r"^([ \t]*listen[ \t]+)\S+([ \t]+http2;)", rf"\g<1>{listen}\2", text, "listen"
    )
    return _replace_one(
        r"^([ \t]*access_log[ \t]+)\S+([ \t]+hotsvc;)", rf"\g<1>{access_log}\2", text, "access_log"
    )


def render_haproxy(text: str, listen: str, upstreams: Upstreams, stats_socket: Path) -> str:
    """deploy/haproxy/hotsvc.cfg for these replicas, listening on `listen`, logging to
    stdout (HAProxy writes no log files), with a stats socket to read server states."""
    server = r"^(?P<indent>[ \t]*)server[ \t]+\S+[ \t]+\S+[^\n]*$"
    lines = [f"server {name} {address}" for name, address in upstreams]
    text = _replace_servers(server, lines, text, "backend server")
    text = _replace_one(
        r"^([ \t]*bind[ \t]+)\S+([ \t]+proto h2)", rf"\g<1>{listen}\2", text, "bind"
    )
    return _replace_one(
        r"^([ \t]*)log[ \t]+/dev/log([ \t]+local0)[ \t]*$",
        rf"\1log stdout format raw\2\n\1stats socket {stats_socket} mode 600 level operator",
        text,
        "global log",
    )


# The timeouts that bound a stream's silence in each shipped config.
SILENCE = {
    "nginx": (
        r"^([ \t]*(?:grpc_read_timeout|grpc_send_timeout|client_body_timeout)[ \t]+)\S+;",
        ";",
        3,
    ),
    "haproxy": (r"^([ \t]*timeout[ \t]+(?:client|server)[ \t]+)\S+$", "", 2),
}


def with_silence(text: str, balancer: str, seconds: int) -> str:
    """The config with every silence timeout set to `seconds` (tests shorten them)."""
    pattern, end, expected = SILENCE[balancer]
    result, count = re.subn(pattern, rf"\g<1>{seconds}s{end}", text, flags=re.MULTILINE)
    if count != expected:
        raise RenderError(f"expected {expected} silence timeouts in the {balancer} config")
    return result


# The balancer of deploy/kubernetes/balancer.yaml: the shipped HAProxy config with its
# replicas found in the DNS records of the headless Service (one server slot per pod).
KUBERNETES_HEADER = """\
# deploy/haproxy/hotsvc.cfg for Kubernetes, made by hotsvc_tools.rendering.
# haproxy_for_kubernetes (tests/test_deploy.py checks that this is what it makes): the
# replicas are the pods behind the headless Service hotsvc-replicas, found in its DNS
# records (one server slot per pod, up to 10); logs go to stdout.

"""
KUBERNETES_RESOLVERS = """resolvers kube
    parse-resolv-conf
    hold valid 5s

"""


def haproxy_for_kubernetes(text: str, service: str, slots: int) -> str:
    """deploy/haproxy/hotsvc.cfg with `server` lines replaced by a server-template over
    `service` (HOST:PORT of a headless Service), listening on all addresses."""
    server = r"^(?P<indent>[ \t]*)server[ \t]+\S+[ \t]+\S+[^\n]*$"
    template = f"server-template replica- {slots} {service} resolvers kube init-addr none"
    text = _replace_servers(server, [template], text, "backend server")
    text = _replace_one(r"^([ \t]*bind[ \t]+)\S+([ \t]+proto h2)", r"\g<1>:50051\2", text, "bind")
    text = _replace_one(r"^(defaults)$", KUBERNETES_RESOLVERS + r"\1", text, "defaults")
    text = _replace_one(
        r"^([ \t]*)log[ \t]+/dev/log([ \t]+local0)[ \t]*$",
        r"\1log stdout format raw\2",
        text,
        "log",
    )
    # Its own header instead of the host install's.
    return KUBERNETES_HEADER + text[text.index("\nglobal\n") + 1 :]
