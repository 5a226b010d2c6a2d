"""Every recipe in README.md and docs/grpcurl.md runs: grpcurl and curl for real, Python
examples too.

A recipe is a ```sh block using grpcurl or curl on the HTTP face (`localhost:8080`), or a
```python block that talks to the service; the `<!-- expect: ... -->` comments right after
it name text its output must contain.
Blocks run in document order against one live plaintext service, except the TLS ones:
a recipe naming `ca.pem` runs against a TLS service taking bearer tokens (`$TOKEN` holds
alice's), one naming `client.pem` against an mTLS service; both run in a directory
holding ca.pem and alice's client.pem/client.key.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from hotsvc.profiles import DEFAULT_PROFILE, Profile
from tests.conftest import BIN, DEADLINE, Conversation, StartService, hotsvc_token
from tests.pki import Authority

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "docs" / "grpcurl.md"]
RECIPE = re.compile(
    r"```(?P<lang>sh|python)\n(?P<script>.*?)```\n(?P<expects>(?:<!-- expect: .*? -->\n)*)",
    re.DOTALL,
)
EXPECT = re.compile(r"<!-- expect: (.*?) -->")
HTTP_ADDRESS = "localhost:8080"  # the docs' --http-listen


def recipes(doc: Path) -> list[tuple[str, list[str]]]:
    """Runnable blocks as shell scripts: grpcurl recipes, and Python examples that call us."""
    found = []
    for match in RECIPE.finditer(doc.read_text()):
        script = match["script"]
        if match["lang"] == "python":
            if "localhost:50051" not in script:
                continue
            script = f"python - <<'PYTHON'\n{script}PYTHON\n"
        elif "grpcurl" not in script and HTTP_ADDRESS not in script:
            continue
        found.append((script, EXPECT.findall(match["expects"])))
    return found


def test_every_recipe_states_what_it_prints() -> None:
    for doc in DOCS:
        assert recipes(doc), f"{doc.name} has no grpcurl recipes"
        for script, expects in recipes(doc):
            assert expects, f"{doc.name}: recipe without <!-- expect: --> lines:\n{script}"


def service_for(script: str) -> str:
    return "mtls" if "client.pem" in script else "tls" if "ca.pem" in script else "plain"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
async def test_recipes_work_as_written(
    start_service: StartService, doc: Path, tmp_path: Path
) -> None:
    # The `ask` profile's tools ask the caller (the permission recipe), in workspaces.
    asks = Profile(
        name="ask",
        pool_size=0,
        permission_prompts="caller",
        workspace_root=str(tmp_path / "workspaces"),
    )
    profiles = {DEFAULT_PROFILE: Profile(name=DEFAULT_PROFILE, pool_size=1), "ask": asks}
    live = await start_service(profiles=profiles, http_listen="127.0.0.1:0")
    assert live.service.http is not None
    talk = Conversation(live.stub)
    session_id = (await talk.open()).session_id
    assert (await talk.ask("Remember 42")).text == "OK"
    await talk.finish()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "SESSION_ID": session_id}
    addresses = {"plain": live.address}
    ca = Authority(tmp_path / "pki")
    server, client = ca.server(), ca.issue("client", "alice")
    tokens = tmp_path / "tokens"
    env["TOKEN"] = await hotsvc_token(tokens, "alice")
    secure = {
        "tls": {"auth_tokens": tokens, "credentials": ca.credentials()},
        "mtls": {"tls_client_ca": ca.ca_path, "credentials": ca.credentials(client)},
    }

    for script, expects in recipes(doc):
        kind = service_for(script)
        if kind not in addresses:
            tls = {"tls_cert": server.cert_path, "tls_key": server.key_path}
            addresses[kind] = (
                await start_service(profiles=profiles, **tls, **secure[kind])
            ).address
        runnable = script.replace("localhost:50051", addresses[kind])
        runnable = runnable.replace(HTTP_ADDRESS, live.service.http.address)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            runnable,
            env=env,
            cwd=ca.directory,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(DEADLINE):
            output, _ = await proc.communicate()
        printed = output.decode()
        assert proc.returncode == 0, f"{doc.name} recipe failed:\n{script}\n{printed}"
        for expected in expects:
            assert expected in printed, (
                f"{doc.name} recipe:\n{script}\nprinted no {expected!r}:\n{printed}"
            )
