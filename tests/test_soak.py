"""A small soak in the suite: `make soak`'s checks on fewer sessions (see hotsvc_tools.soak)."""

from __future__ import annotations

from pathlib import Path

from hotsvc_tools import soak


async def test_a_small_soak_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    options = soak.Options(
        sessions=24,
        concurrency=8,
        turns=6,
        max_sessions=5,
        pool_size=1,
        hangs=1,
        seed=20261124,
        time_limit=120,
        work_dir=tmp_path,
    )
    figures = await soak.run(options)
    report = soak.render(options, figures)
    # No leak, every turn on a stream kept to the end had exactly one result, only
    # documented statuses, the process cap held, memory flat between the halves.
    assert figures.ok, report
    assert figures.leaked == set(), report
    # ... under the faults it is meant to inject.
    assert figures.turns_accepted > 0 and figures.results >= figures.turns_accepted, report
    assert all(figures.sent_by_kind[kind] > 0 for kind in ("crash", "garbage", "hang")), report
    assert figures.disconnects > 0, report
    assert figures.opened_by_start["RESUMED"] + figures.resumed_in_turn > 0, report
