"""Every shell recipe in README.md and docs/grpcurl.md runs, with the real grpcurl.

A recipe is a ```sh block; the `<!-- expect: ... -->` comments right after it name
text its output must contain. Blocks run in document order against one live service.
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
RECIPE = re.compile(r"```sh\n(?P<script>.*?)```\n(?P<expects>(?:<!-- expect: .*? -->\n)*)",
                    re.DOTALL)
EXPECT = re.compile(r"<!-- expect: (.*?) -->")


def recipes(doc: Path) -> list[tuple[str, list[str]]]:
    found = [(m["script"], EXPECT.findall(m["expects"])) for m in RECIPE.finditer(doc.read_text())]
    return [(script, expects) for script, expects in found if "grpcurl" in script]


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
            "bash", "-euo", "pipefail", "-c", runnable, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        async with asyncio.timeout(DEADLINE):
            output, _ = await proc.communicate()
        printed = output.decode()
        assert proc.returncode == 0, f"{doc.name} recipe failed:\n{script}\n{printed}"
        for expected in expects:
            assert expected in printed, (
                f"{doc.name} recipe:\n{script}\nprinted no {expected!r}:\n{printed}")
