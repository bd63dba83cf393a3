"""OpenAI Responses: POST /v1/responses answered whole or streamed; GET and DELETE of stored ones.

Each stored response keeps its whole conversation, so `previous_response_id` continues it; the
store is a bounded LRU on `app.ctx.responses`, gone on restart.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from sanic import Request
from sanic.response import HTTPResponse

from tholos_mlx.api import Dialect, exchange, sse
from tholos_mlx.api.coalesce import coalesced
from tholos_mlx.api.gathered import Gathered
from tholos_mlx.api.responses_items import page
from tholos_mlx.api.responses_output import Output, WireEvent, new_id, response_object
from tholos_mlx.api.responses_request import ResponsesRequest, parse_responses, wire_param
from tholos_mlx.api.responses_store import MAX_RESPONSES, ResponseStore, Stored
from tholos_mlx.errors import NotFound, TholosError
from tholos_mlx.events import Event, Finished, Started
from tholos_mlx.request import Message

PATH = "/v1/responses"


# -- the answer --


class _Reply:
    """One response: renders it, whole or streamed, and stores it when asked to."""

    def __init__(
        self, parsed: ResponsesRequest, history: tuple[Message, ...], store: ResponseStore
    ) -> None:
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.echo = parsed.echo
        self._conversation = history + parsed.input
        self._parsed = parsed
        self._store = store

    def body(self, model: str, output: Output, finished: Finished) -> bytes:
        """The final response object's JSON, stored (with the conversation) unless store is false."""
        status = "incomplete" if finished.finish_reason == "length" else "completed"
        body = orjson.dumps(
            response_object(
                id=self.id,
                created_at=self.created_at,
                model=model,
                echo=self.echo,
                status=status,
                output=output.items,
                usage=finished.usage,
                incomplete=status == "incomplete",
                completed_at=int(time.time()) if status == "completed" else None,
            )
        )
        if self.echo.store:
            conversation = (*self._conversation, output.turn())
            self._store.put(self.id, Stored(body, conversation, self._parsed.items))
        return body

    def complete(self, request: Request, started: Started, answer: Gathered) -> HTTPResponse:
        assert answer.finished is not None
        body = self.body(
            started.model,
            Output.of(answer, self.echo.namespaces, self.echo.custom),
            answer.finished,
        )
        return HTTPResponse(body, content_type="application/json")

    def stream(self, started: Started) -> ResponsesStream:
        return ResponsesStream(self, started.model)


class ResponsesStream:
    """One streamed response: engine events in, named SSE events with rising sequence numbers out."""

    def __init__(self, reply: _Reply, model: str) -> None:
        self._reply = reply
        self._model = model
        self._output = Output(reply.echo.namespaces, reply.echo.custom)
        self._seq = 0
        pending = response_object(
            id=reply.id,
            created_at=reply.created_at,
            model=model,
            echo=reply.echo,
            status="in_progress",
            output=[],
        )
        # Numbered now: the exchange renders the first batch before it sends the head.
        self._head = self._send(
            [
                {"type": "response.created", "response": pending},
                {"type": "response.in_progress", "response": pending},
            ]
        )

    def head(self) -> bytes:
        """response.created and response.in_progress, the response still empty."""
        return self._head

    def render(self, batch: list[Event]) -> tuple[bytes, bool]:
        """The bytes for a batch of events, and whether the stream is complete."""
        out: list[bytes] = []
        for ev in coalesced(batch):
            if isinstance(ev, BaseException):
                out.append(self.error(ev))
                return b"".join(out), True
            out.append(self._send(self._output.add(ev)))
            if isinstance(ev, Finished):
                body = self._reply.body(self._model, self._output, ev)
                name = (
                    "response.incomplete" if ev.finish_reason == "length" else "response.completed"
                )
                head = f'{{"type":"{name}","sequence_number":{self._next()},"response":'
                out.append(f"event: {name}\ndata: {head}".encode() + body + b"}\n\n")
                return b"".join(out), True
        return b"".join(out), False

    def error(self, exc: BaseException) -> bytes:
        """After the headers an error is one `error` event, and the stream ends."""
        err = sse.as_tholos(exc)
        return self._send(
            [
                {
                    "type": "error",
                    "code": err.code,
                    "message": err.message,
                    "param": wire_param(err.param),
                }
            ]
        )

    def _next(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    def _send(self, events: list[WireEvent]) -> bytes:
        return b"".join(
            sse.event(ev["type"], {**ev, "sequence_number": self._next()}) for ev in events
        )


# -- the routes --


def _not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(
        f"No response with id {response_id!r} is stored here. Responses are kept in memory "
        f"(the last {MAX_RESPONSES} with store true) and forgotten when the server restarts.",
        param=param,
        code="previous_response_not_found" if param else "not_found",
    )


async def _create(request: Request) -> HTTPResponse | None:
    parsed = parse_responses(request.body)
    store: ResponseStore = request.app.ctx.responses
    history: tuple[Message, ...] = ()
    previous = parsed.echo.previous_response_id
    if previous is not None:
        stored = store.get(previous)
        if stored is None:
            raise _not_found(previous, "previous_response_id")
        history = stored.conversation
    try:
        return await exchange.run(
            request,
            parsed.generation(history),
            _Reply(parsed, history, store),
        )
    except TholosError as err:  # the engine names the internal request's fields
        err.param = wire_param(err.param)
        raise


async def _retrieve(request: Request, response_id: str) -> HTTPResponse:
    stored = request.app.ctx.responses.get(response_id)
    if stored is None:
        raise _not_found(response_id)
    return HTTPResponse(stored.body, content_type="application/json")


async def _input_items(request: Request, response_id: str) -> HTTPResponse:
    """A stored response's input items, a page at a time (`limit`, `order`, `after`)."""
    stored = request.app.ctx.responses.get(response_id)
    if stored is None:
        raise _not_found(response_id)
    query = {k: v[0] for k, v in request.args.items() if v}
    body = page(stored.input_items, query)
    return HTTPResponse(orjson.dumps(body), content_type="application/json")


async def _delete(request: Request, response_id: str) -> HTTPResponse:
    if not request.app.ctx.responses.delete(response_id):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return HTTPResponse(orjson.dumps(body), content_type="application/json")


def _mount(app: Any) -> None:
    app.ctx.responses = ResponseStore()
    app.add_route(_create, PATH, methods=["POST"], name="responses_create")
    app.add_route(_retrieve, PATH + "/<response_id:str>", methods=["GET"], name="responses_get")
    app.add_route(_delete, PATH + "/<response_id:str>", methods=["DELETE"], name="responses_delete")
    app.add_route(
        _input_items,
        PATH + "/<response_id:str>/input_items",
        methods=["GET"],
        name="responses_input_items",
    )


DIALECT = Dialect("openai_responses", (PATH,), _mount, TholosError.body)  # OpenAI's own shape
