"""Random request sequences against one live server: it answers every stream the way the
contract says, loses no result, and leaks no process.

Each Hypothesis example is a handful of Prompt streams (run one after another, or all at
once), each a random plan: open a new session, re-attach to one (live, closed, unknown or
malformed), or skip `open`; then turns (ordinary, `crash`, `garbage`, `slow`, random text,
empty or oversized), interrupts, a stray `open`, an empty request, a DeleteSession from
another caller (the "close" step: the session is gone for good); then half-close or
cancel. Checked for every stream:

- every accepted turn gets exactly one `result`, on this stream, in the order sent
  (unless the caller cancelled: then at most one); a refused turn gets none;
- the status is a documented one, with ErrorInfo whose reason matches the code; run
  sequentially, it is exactly the expected one;

and after every example: PoolStatus answers, no session is left behind once closed, and
the only Claude Code processes alive are the warm pool's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import itertools
import os
import re
import signal
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_status import rpc_status
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from hotsvc.grpc.server import Service
from tests.conftest import DEADLINE, child_pids, make_config, wait_serving

MAX_TURN_CHARS = 24
MAX_EXAMPLES = 60
POOL_SIZE = 1
EXAMPLE_LIMIT = 3 * DEADLINE  # past every deadline of the calls an example makes
SETTLE_SECONDS = 10.0  # for the pool to refill after an example; a safety net, not a wait
Code = grpc.StatusCode
Call = grpc.aio.StreamStreamCall[pb.PromptRequest, pb.PromptResponse]
# The reason each documented error status carries.
REASON_CODES = {
    "INVALID_REQUEST": Code.INVALID_ARGUMENT,
    "SESSION_NOT_FOUND": Code.NOT_FOUND,
    "PROFILE_NOT_FOUND": Code.NOT_FOUND,
    "SESSION_ATTACHED": Code.FAILED_PRECONDITION,
    "CAPACITY_EXHAUSTED": Code.RESOURCE_EXHAUSTED,
    "DRAINING": Code.UNAVAILABLE,
    "SPAWN_FAILED": Code.UNAVAILABLE,
    "SESSION_CLOSED": Code.ABORTED,
}
# Emulator triggers that take seconds (hang: watchdog + kill) or run tools: not in the mix.
SLOW_TRIGGERS = re.compile(r"hang|huge|stall|run\s+tool|fail\s*\d", re.IGNORECASE)


# -- plans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: str  # turn | interrupt | close | open | empty
    text: str = ""
    wait: bool = False  # wait for this turn's result before the next step

    @property
    def bad(self) -> bool:
        """The server refuses this request (and ends the stream)."""
        if self.kind == "turn":
            return not self.text.strip() or len(self.text) > MAX_TURN_CHARS
        return self.kind in ("open", "empty")

    def request(self) -> pb.PromptRequest:
        if self.kind == "turn":
            return pb.PromptRequest(turn=pb.UserTurn(text=self.text))
        if self.kind == "interrupt":
            return pb.PromptRequest(interrupt=pb.Interrupt())
        if self.kind == "open":
            return pb.PromptRequest(open=pb.OpenSession())
        return pb.PromptRequest()


@dataclass(frozen=True)
class Plan:
    target: str  # new | existing | closed | unknown | malformed | none
    pick: int  # which existing (or closed) session
    steps: tuple[Step, ...]
    cancel: bool  # else half-close
    cancel_after: int  # responses to read before cancelling


texts = st.one_of(
    st.sampled_from(
        [
            "Remember 7",
            "What number?",
            "hello there",
            "please crash now",
            "garbage in",
            "slow please",
            "echo hi",
            "Remember 12",
        ]
    ),
    st.text(max_size=MAX_TURN_CHARS + 6).filter(lambda t: not SLOW_TRIGGERS.search(t)),
)
steps = st.one_of(
    st.builds(Step, st.just("turn"), texts, st.booleans()),
    st.builds(Step, st.just("turn"), texts, st.booleans()),
    st.builds(Step, st.just("turn"), texts, st.booleans()),
    st.builds(Step, st.sampled_from(["interrupt", "interrupt", "close", "open", "empty"])),
)
stream_plans = st.builds(
    Plan,
    target=st.sampled_from(
        ["new", "new", "existing", "existing", "closed", "unknown", "malformed", "none"]
    ),
    pick=st.integers(0, 7),
    steps=st.lists(steps, max_size=6).map(tuple),
    cancel=st.booleans(),
    cancel_after=st.integers(0, 8),
)


# -- running a plan ----------------------------------------------------------------------


@dataclass
class Outcome:
    plan: Plan
    session_id: str = ""
    opened: bool = False
    sent: list[str] = field(default_factory=list)  # turn ids, in order
    accepted: list[str] = field(default_factory=list)  # those sent before any bad request
    results: list[str] = field(default_factory=list)  # turn ids of results, in order
    foreign: list[str] = field(default_factory=list)  # turn ids this stream never sent
    responses: int = 0
    cancelled: bool = False
    refused: bool = False  # sent a request the server must refuse
    code: grpc.StatusCode | None = None
    reason: str = ""
    details: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False

    def has_result(self, turn_id: str) -> bool:
        return turn_id in self.results

    def describe(self) -> str:
        return (
            f"{self.plan}\n  session={self.session_id} code={self.code} "
            f"reason={self.reason} details={self.details[:300]!r}\n  "
            f"accepted={self.accepted} results={self.results}"
        )


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(cast(grpc.Call, error))
    if status is None:
        return ""
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return str(info.reason)
    return ""


class World:
    """One server for the whole test; examples run against it one after another."""

    def __init__(self, service: Service, channel: grpc.aio.Channel) -> None:
        self.service = service
        self.channel = channel
        self.stub: pb_grpc.HotSessionAsyncStub = pb_grpc.HotSessionStub(channel)
        self.turn_ids = itertools.count()
        # Sessions of the running example, and every session closed so far.
        self.sessions: list[str] = []
        self.closed: list[str] = []
        self.last_cancelled: set[str] = set()

    @classmethod
    async def start(cls, tmp_path: Path) -> World:
        config = make_config(
            pool_size=POOL_SIZE,
            max_turn_chars=MAX_TURN_CHARS,
            turn_inactivity_timeout=2.0,
            child_env={
                "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
                "HOTSVC_EMU_SLOW_DELAY": "0.005",
            },
        )
        service = Service(config)
        await service.start()
        channel = grpc.aio.insecure_channel(service.address)
        await wait_serving(channel)
        return cls(service, channel)

    async def stop(self) -> None:
        await self.channel.close(grace=None)
        await self.service.stop()

    # -- one example

    async def play(self, plans: list[Plan], concurrent: bool) -> None:
        self.sessions, self.last_cancelled = [], set()
        try:
            if concurrent:
                outcomes = await asyncio.gather(*(self._stream(p) for p in plans))
            else:
                outcomes = [await self._stream(p, sequential=True) for p in plans]
            for outcome in outcomes:
                check_stream(outcome, self.closed)
        finally:
            await self._close_all()
        await self._check_nothing_left()

    def _target_id(self, plan: Plan) -> str:
        if plan.target == "existing" and self.sessions:
            return self.sessions[plan.pick % len(self.sessions)]
        if plan.target == "closed" and self.closed:
            return self.closed[plan.pick % len(self.closed)]
        if plan.target == "unknown":
            return str(uuid.uuid4())
        if plan.target == "malformed":
            return f"session-{plan.pick}"
        return ""

    def _expected_open(self, plan: Plan, session_id: str) -> set[grpc.StatusCode | None]:
        """Run alone, how the open is answered (None: it opens)."""
        if plan.target == "none" or plan.target == "malformed":
            return {Code.INVALID_ARGUMENT}
        if plan.target == "unknown" or session_id in self.closed:
            return {Code.NOT_FOUND}
        if session_id in self.last_cancelled:  # its old stream may not have unwound yet
            return {None, Code.FAILED_PRECONDITION}
        return {None}

    async def _stream(self, plan: Plan, sequential: bool = False) -> Outcome:
        outcome = Outcome(plan)
        call = self.stub.Prompt(None, timeout=DEADLINE)
        reader = asyncio.create_task(self._read(call, outcome))
        try:
            session_id = self._target_id(plan)
            expected = self._expected_open(plan, session_id)
            if plan.target == "none":
                first = (
                    plan.steps[0]
                    if plan.steps and plan.steps[0].kind != "open"
                    else Step("interrupt")
                )
                await call.write(first.request())
            else:
                await call.write(pb.PromptRequest(open=pb.OpenSession(session_id=session_id)))
            await self._until(outcome, lambda: outcome.opened)
            if sequential:
                answer = None if outcome.opened else outcome.code
                assert answer in expected, (
                    f"open answered {answer}, not {expected}\n" + outcome.describe()
                )
            if outcome.opened:
                await self._converse(call, outcome)
            await asyncio.wait_for(asyncio.shield(reader), DEADLINE)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            call.cancel()
        if outcome.cancelled:
            self.last_cancelled.add(outcome.session_id)
        else:
            self.last_cancelled.discard(outcome.session_id)
        return outcome

    async def _converse(self, call: Call, outcome: Outcome) -> None:
        plan = outcome.plan
        for step in plan.steps:
            if outcome.done:
                break
            if step.kind == "close":
                await self._close(outcome.session_id)
                # The server ends a stream whose session was closed (ABORTED) once the
                # turns it accepted have their results; writing on would race that status.
                await self._until(outcome, lambda: False)
                break
            turn_id = f"t{next(self.turn_ids)}"
            request = step.request()
            if step.kind == "turn":
                request.turn.turn_id = turn_id
                outcome.sent.append(turn_id)
                if not step.bad:
                    outcome.accepted.append(turn_id)
            await call.write(request)
            if step.bad:
                # The server ends the stream. Writing on would race its status, and a
                # grpc-python aio client that loses that race reports INTERNAL "Internal
                # error from Core" instead of the server's status (grpc/grpc#36066).
                outcome.refused = True
                break
            if step.kind == "turn" and step.wait:
                await self._until(outcome, functools.partial(outcome.has_result, turn_id))
        if plan.cancel:
            await self._until(
                outcome,
                lambda: (
                    outcome.responses >= plan.cancel_after
                    or set(outcome.accepted) <= set(outcome.results)
                ),
            )
            outcome.cancelled = not outcome.done
            call.cancel()
        elif not outcome.refused:
            await call.done_writing()

    @staticmethod
    async def _until(outcome: Outcome, ready: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not (ready() or outcome.done):
                outcome.changed.clear()
                await outcome.changed.wait()

    async def _read(self, call: Call, outcome: Outcome) -> None:
        try:
            while isinstance(response := await call.read(), pb.PromptResponse):  # else EOF
                outcome.responses += 1
                kind = response.WhichOneof("event")
                if kind == "opened":
                    outcome.opened = True
                    outcome.session_id = response.opened.session_id
                    if outcome.session_id not in self.sessions:
                        self.sessions.append(outcome.session_id)
                elif response.turn_id and response.turn_id not in outcome.sent:
                    outcome.foreign.append(response.turn_id)
                if kind == "result":
                    outcome.results.append(response.turn_id)
                outcome.changed.set()
            outcome.code = await call.code()
        except grpc.aio.AioRpcError as error:
            outcome.code, outcome.reason = error.code(), reason_of(error)
            outcome.details = str(error.details())
        except asyncio.CancelledError:
            if not outcome.cancelled and not call.cancelled():
                raise
            outcome.code = Code.CANCELLED
        finally:
            outcome.done = True
            outcome.changed.set()

    async def _close(self, session_id: str) -> None:
        first = session_id not in self.closed
        if first:
            self.closed.append(session_id)
        try:
            await self.stub.DeleteSession(
                pb.DeleteSessionRequest(session_id=session_id), timeout=DEADLINE
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == Code.NOT_FOUND, error
            assert not first, f"{session_id} was not closed yet: {error}"  # by another step

    async def _close_all(self) -> None:
        for session_id in self.sessions:
            if session_id not in self.closed:
                await self._close(session_id)

    async def _check_nothing_left(self) -> None:
        """The server answers, keeps no closed session, and runs only its warm pool."""
        status = await self.stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
        assert list(status.sessions) == [], status.sessions

        # Closing waited for each process to exit; only the pool's refill may be under way.
        # Bounded tighter than DEADLINE so a leak fails the example in seconds.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_SECONDS):
                while not await self._only_the_pool():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        status = await self.stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
        idle = set(status.pools[0].idle_pids)
        assert child_pids() == idle and len(idle) == POOL_SIZE, (
            f"processes alive besides the warm pool {sorted(idle)}: "
            f"{sorted(child_pids() - idle)}; sessions: {list(status.sessions)}"
        )

    async def _only_the_pool(self) -> bool:
        status = await self.stub.PoolStatus(pb.PoolStatusRequest(), timeout=DEADLINE)
        idle = set(status.pools[0].idle_pids)
        return len(idle) == POOL_SIZE and child_pids() == idle


def check_stream(outcome: Outcome, closed: list[str]) -> None:
    where = outcome.describe()
    assert outcome.foreign == [], f"events for turns another stream sent\n{where}"
    assert len(set(outcome.results)) == len(outcome.results), f"a second result\n{where}"
    assert set(outcome.results) <= set(outcome.accepted), f"a refused turn ran\n{where}"
    if outcome.cancelled:
        assert outcome.code == Code.CANCELLED, where
        return
    assert outcome.results == outcome.accepted, f"results lost or out of order\n{where}"
    assert outcome.code is not None and outcome.code != Code.CANCELLED, where
    if outcome.code != Code.OK:
        assert REASON_CODES.get(outcome.reason) == outcome.code, (
            f"{outcome.code} without its documented reason\n{where}"
        )
    if outcome.opened:  # a refused request ends the stream; else the caller's half-close,
        # or DeleteSession of its session by another step
        expected = {Code.INVALID_ARGUMENT if outcome.refused else Code.OK}
        if outcome.session_id in closed:
            expected.add(Code.ABORTED)
        assert outcome.code in expected, where


# -- the test ----------------------------------------------------------------------------


async def bounded(work: Coroutine[Any, Any, None]) -> None:
    """Run one example; if it is stuck past every deadline, fail with what each task awaits."""
    task = asyncio.create_task(work)
    done, _ = await asyncio.wait({task}, timeout=EXAMPLE_LIMIT)
    if not done:
        stacks = io.StringIO()
        for other in asyncio.all_tasks():
            other.print_stack(limit=12, file=stacks)
        task.cancel()
        raise AssertionError(f"example stuck for {EXAMPLE_LIMIT}s; tasks:\n{stacks.getvalue()}")
    task.result()


def test_random_request_sequences(tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        world = runner.run(World.start(tmp_path))
        try:
            # No shrinking: examples against one live server are not independent, and a
            # failing one is small enough to read as it is.
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                print_blob=True,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(plans=st.lists(stream_plans, min_size=1, max_size=4), concurrent=st.booleans())
            # A DeleteSession while the session's next process is starting (after a crash).
            @example(
                plans=[
                    Plan(
                        "new",
                        0,
                        (
                            Step("turn", "please crash now", wait=True),
                            Step("turn", "hello there"),
                            Step("close"),
                        ),
                        cancel=False,
                        cancel_after=0,
                    )
                ],
                concurrent=False,
            )
            def play(plans: list[Plan], concurrent: bool) -> None:
                runner.run(bounded(world.play(plans, concurrent)))

            play()
        finally:
            runner.run(world.stop())
            # A process hotsvc lost track of would also keep the loop from closing (its
            # reader task waits for it to exit): end it here, then fail.
            leftover = child_pids()
            for pid in leftover:
                os.kill(pid, signal.SIGKILL)
    assert leftover == set(), "hotsvc left child processes behind"
