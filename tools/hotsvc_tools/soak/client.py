"""The clients: each opens its session, sends its turns over one or more Prompt streams,
disconnects or interrupts where its plan says, comes back, and closes the session.

They count what they see in the Figures and fail on what a caller must never see: a turn
without exactly one result, events of another stream's turn, a stream that ends badly, an
open refused for a reason a retry can't cure or that is not documented.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_status import rpc_status
from hotsession.v1 import hotsession_pb2 as pb
from hotsession.v1 import hotsession_pb2_grpc as pb_grpc

from hotsvc.errors import REASONS
from hotsvc_tools.soak.figures import Figures, Options
from hotsvc_tools.soak.plan import ClientPlan, Scenario, StreamPlan

Code = grpc.StatusCode
Call = grpc.aio.StreamStreamCall[pb.PromptRequest, pb.PromptResponse]
# Refusals a client waits out and retries; anything else on open is a failure.
RETRIED = {"CAPACITY_EXHAUSTED", "SESSION_ATTACHED", "SPAWN_FAILED"}
# Safety net for one turn: the slowest, a hang, takes the watchdog's ~12 s.
TURN_DEADLINE = 30.0


@dataclass
class Stream:
    sent: list[str] = field(default_factory=list)
    results: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: bool = False


def retry_delay(error: grpc.aio.AioRpcError) -> tuple[str, float]:
    """The ErrorInfo reason and the RetryInfo delay of a refusal."""
    status: Any = rpc_status.from_call(error)  # type: ignore[arg-type]  # an aio error
    reason, delay = "", 0.05
    for packed in status.details if status is not None else ():
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, delay


class Clients:
    """All the soak's clients, `concurrency` at a time, on one channel."""

    def __init__(
        self, options: Options, stub: pb_grpc.HotSessionAsyncStub, figures: Figures
    ) -> None:
        self.options = options
        self.stub = stub
        self.figures = figures
        self.scenario = Scenario(options.seed, options.hangs)
        self.turn_ids = itertools.count(1)
        self.session_ids: set[str] = set()
        self.closed: set[str] = set()

    def fail(self, message: str) -> None:
        self.figures.fail(message, echo=self.options.verbose)

    async def run_half(self, indices: range) -> None:
        slots = asyncio.Semaphore(self.options.concurrency)

        async def limited(index: int) -> None:
            async with slots:
                await self.client(index)

        await asyncio.gather(*(limited(i) for i in indices))

    async def close_remaining(self) -> None:
        for session_id in sorted(self.session_ids - self.closed):
            await self.close(session_id)

    async def client(self, index: int) -> None:
        plan = self.scenario.client(index)  # the same plan on every run
        session_id, turns_left = "", self.options.turns
        while turns_left > 0:
            stream_plan = plan.stream(turns_left)
            turns_left -= len(stream_plan.turns)
            opened = await self.stream(session_id, plan, stream_plan)
            if not opened:
                return
            session_id = opened
            if plan.gone_for_good(stream_plan):  # cancelled, then closed
                break
        await self.close(session_id)

    async def stream(self, session_id: str, plan: ClientPlan, stream_plan: StreamPlan) -> str:
        """One Prompt stream; the session id, or "" if it could not be opened."""
        call, opened = await self.open(session_id, plan.profile)
        if call is None or opened is None:
            return ""
        self.figures.streams += 1
        start = pb.SessionStart.Name(opened.start).removeprefix("SESSION_START_")
        self.figures.opened_by_start[start] += 1
        if not session_id:
            self.figures.sessions += 1
            self.session_ids.add(opened.session_id)
        stream = Stream()
        cancel_turn = plan.cancel_turn(stream_plan)
        try:
            for index, (kind, text) in enumerate(stream_plan.turns):
                turn_id = f"soak-{next(self.turn_ids)}"
                stream.sent.append(turn_id)
                self.figures.turns_sent += 1
                self.figures.sent_by_kind[kind] += 1
                await call.write(pb.PromptRequest(turn=pb.UserTurn(text=text, turn_id=turn_id)))
                interrupt = plan.interrupt(kind)
                cancel_after = plan.cancel_after(index, cancel_turn)
                if not await self.read_turn(call, stream, turn_id, kind, interrupt, cancel_after):
                    break
            if not stream.cancelled:
                await call.done_writing()
                async with asyncio.timeout(TURN_DEADLINE):
                    while isinstance(extra := await call.read(), pb.PromptResponse):
                        self.fail(f"an event after the last result: {extra}")
                code = await call.code()
                if code != Code.OK:
                    self.fail(f"stream on {opened.session_id} ended {code.name}, not OK")
        except grpc.aio.AioRpcError as error:
            self.fail(
                f"stream on {opened.session_id} failed: {error.code().name} {error.details()}"
            )
        except TimeoutError:
            self.fail(
                f"stream on {opened.session_id}: turn {stream.sent[-1]} had no result, "
                f"or the stream no end, within {TURN_DEADLINE:g} s"
            )
        finally:
            call.cancel()
        self.account(stream, opened.session_id)
        return opened.session_id

    async def read_turn(
        self,
        call: Call,
        stream: Stream,
        turn_id: str,
        kind: str,
        interrupt: bool,
        cancel_after: int,
    ) -> bool:
        """Read up to this turn's result; False if the client disconnected instead."""
        events = 0
        async with asyncio.timeout(TURN_DEADLINE):
            while True:
                if events == cancel_after:
                    stream.cancelled = True
                    self.figures.disconnects += 1
                    call.cancel()
                    return False
                response = await call.read()
                if not isinstance(response, pb.PromptResponse):
                    self.fail(f"stream ended before the result of {turn_id}")
                    return False
                events += 1
                event = response.WhichOneof("event")
                if response.turn_id and response.turn_id not in stream.sent:
                    self.fail(f"an event of {response.turn_id} on a stream that did not send it")
                if event == "progress" and response.progress.subtype == "resumed":
                    self.figures.resumed_in_turn += 1
                if event == "text_delta" and interrupt:
                    interrupt = False
                    self.figures.interrupts += 1
                    kind += "+interrupt"
                    await call.write(pb.PromptRequest(interrupt=pb.Interrupt()))
                if event == "result":
                    subtype = response.result.subtype or "?"
                    stream.results[response.turn_id] += 1
                    self.figures.results += 1
                    self.figures.results_by_subtype[subtype] += 1
                    if response.turn_id == turn_id:
                        self.figures.outcomes[f"{kind} -> {subtype}"] += 1
                        return True

    def account(self, stream: Stream, session_id: str) -> None:
        for turn_id in stream.sent:
            got = stream.results[turn_id]
            if got > 1:
                self.fail(f"turn {turn_id} of {session_id} got {got} results")
            if stream.cancelled:
                self.figures.results_lost_to_disconnects += got == 0
            else:
                self.figures.turns_accepted += 1
                if got != 1:
                    self.fail(f"turn {turn_id} of {session_id} got {got} results, not one")

    async def open(
        self,
        session_id: str,
        profile: str,
    ) -> tuple[Call | None, pb.SessionOpened | None]:
        """Open or re-attach, waiting out refusals a retry can cure (as RetryInfo says)."""
        which = session_id or "a new session"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            call = self.stub.Prompt(None, timeout=180)
            try:
                await call.write(
                    pb.PromptRequest(open=pb.OpenSession(session_id=session_id, profile=profile))
                )
                response = await call.read()
                # An open at the cap waits in line and is told its place first.
                while isinstance(response, pb.PromptResponse) and (
                    response.progress.subtype == "queued"
                ):
                    response = await call.read()
            except grpc.aio.AioRpcError as error:
                reason, delay = retry_delay(error)
                self.figures.refusals[reason or error.code().name] += 1
                if reason not in RETRIED:
                    self.fail(
                        f"open of {which} refused: {error.code().name} {reason} {error.details()}"
                    )
                    return None, None
                if reason not in REASONS:
                    self.fail(f"undocumented reason {reason!r}")
                await asyncio.sleep(delay * (0.5 + random.random()))
                continue
            if isinstance(response, pb.PromptResponse) and response.HasField("opened"):
                return call, response.opened
            self.fail(f"open answered {response!r}")
            call.cancel()
            return None, None
        self.fail(f"could not open {which} within 60 s")
        return None, None

    async def close(self, session_id: str) -> None:
        if not session_id or session_id in self.closed:
            return
        self.closed.add(session_id)
        try:  # gone for good: CloseSession would keep the conversation
            await self.stub.DeleteSession(
                pb.DeleteSessionRequest(session_id=session_id), timeout=60
            )
            self.figures.closes += 1
        except grpc.aio.AioRpcError as error:
            self.fail(f"DeleteSession {session_id}: {error.code().name} {error.details()}")
