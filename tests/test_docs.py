"""Every recipe in README.md and docs/grpcurl.md runs: grpcurl for real, Python examples too.

A recipe is a ```sh block using grpcurl, or a ```python block that talks to the service;
the `<!-- expect: ... -->` comments right after it name text its output must contain.
Blocks run in document order against one live service.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from tests.conftest import BIN, DEADLINE, Conversation, StartService

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "docs" / "grpcurl.md"]
RECIPE = re.compile(
    r"```(?P<lang>sh|python)\n(?P<script>.*?)```\n(?P<expects>(?:<!-- expect: .*? -->\n)*)",
    re.DOTALL,
)
EXPECT = re.compile(r"<!-- expect: (.*?) -->")


def recipes(doc: Path) -> list[tuple[str, list[str]]]:
    """Runnable blocks as shell scripts: grpcurl recipes, and Python examples that call us."""
    found = []
    for match in RECIPE.finditer(doc.read_text()):
        script = match["script"]
        if match["lang"] == "python":
            if "localhost:50051" not in script:
                continue
            script = f"python - <<'PYTHON'\n{script}PYTHON\n"
        elif "grpcurl" not in script:
            continue
        found.append((script, EXPECT.findall(match["expects"])))
    return found


def test_every_recipe_states_what_it_prints() -> None:
    for doc in DOCS:
        assert recipes(doc), f"{doc.name} has no grpcurl recipes"
        for script, expects in recipes(doc):
            assert expects, f"{doc.name}: recipe without <!-- expect: --> lines:\n{script}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
async def test_recipes_work_as_written(start_service: StartService, doc: Path) -> None:
    live = await start_service(pool_size=1)
    talk = Conversation(live.stub)
    session_id = (await talk.open()).session_id
    assert (await talk.ask("Remember 42")).text == "OK"
    await talk.finish()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "SESSION_ID": session_id}

    for script, expects in recipes(doc):
        runnable = script.replace("localhost:50051", live.address)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            runnable,
            env=env,
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
