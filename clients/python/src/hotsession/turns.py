"""A turn's events and result, and the content blocks a turn may carry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from hotsession.errors import ServiceError, TurnFailedError
from hotsession.v1 import hotsession_pb2 as pb

__all__ = ["Content", "Turn", "document", "image"]


# Content for `Session.send`/`ask`: ContentBlocks, or plain strings for text blocks.
Content = Sequence["pb.ContentBlock | str"]


def image(data: bytes, media_type: str = "image/png") -> pb.ContentBlock:
    """An image block (png, jpeg, gif or webp)."""
    return pb.ContentBlock(image=pb.ImageBlock(media_type=media_type, data=data))


def document(data: bytes, media_type: str = "application/pdf", title: str = "") -> pb.ContentBlock:
    """A document block: a PDF, or UTF-8 text with media_type "text/plain"."""
    return pb.ContentBlock(document=pb.DocumentBlock(media_type=media_type, data=data, title=title))


def _blocks(content: Content) -> list[pb.ContentBlock]:
    return [
        pb.ContentBlock(text=pb.TextBlock(text=b)) if isinstance(b, str) else b for b in content
    ]


class Turn:
    """One user turn: its events as they arrive, and its result.

    Iterate it (as often as you like, each pass from the start) for every event up to
    and including `result`, or await `result()` / `text()` for the end alone.
    """

    def __init__(self, turn_id: str, prompt: str) -> None:
        self.turn_id = turn_id
        self.prompt = prompt
        self._events: list[pb.PromptResponse] = []
        self._failure: BaseException | None = None
        self._changed = asyncio.Event()
        self._result: asyncio.Future[pb.TurnResult] = asyncio.get_running_loop().create_future()
        # A caller may never await the result; don't warn about an unretrieved exception.
        self._result.add_done_callback(lambda f: f.cancelled() or f.exception())

    @property
    def done(self) -> bool:
        return self._result.done()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _deliver(self, event: pb.PromptResponse) -> None:
        if self.done:
            return
        self._events.append(event)
        if event.WhichOneof("event") == "result":
            self._result.set_result(event.result)
        elif event.WhichOneof("event") == "error":  # refused, e.g. past the pending limit
            self._failure = ServiceError.from_stream_error(event.error)
            self._result.set_exception(self._failure)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self.done:
            self._failure = exc
            self._result.set_exception(exc)
            self._wake()

    async def __aiter__(self) -> AsyncIterator[pb.PromptResponse]:
        seen = 0
        while True:
            changed = self._changed
            while seen < len(self._events):
                event = self._events[seen]
                seen += 1
                yield event
                if event.WhichOneof("event") == "result":
                    return
            if self._failure is not None:
                raise self._failure
            if self.done:
                return
            await changed.wait()

    async def result(self) -> pb.TurnResult:
        """The turn's TurnResult (errors included); raises if the stream broke first."""
        return await asyncio.shield(self._result)

    async def text(self) -> str:
        """The turn's final text; raises TurnFailedError when the result is an error."""
        result = await self.result()
        if result.is_error:
            raise TurnFailedError(result)
        return result.text
