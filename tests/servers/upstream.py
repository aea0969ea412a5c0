"""A small OpenAI-compatible server for the gateway tests: answers with its own name.

Run: python tests/servers/upstream.py NAME PORT. Streaming answers send five SSE chunks
0.2 s apart, so a test can see chunks arrive before the upstream has finished. A request
with ``"force_status": N`` gets an OpenAI-style error with that status; ``"hang": S``
waits S seconds before answering (a timeout); ``"die_after": K`` streams K chunks and then
drops the connection mid-stream (a crashed server); ``"chunks": N`` streams N chunks instead
of five; ``"pad": N`` adds N bytes to each streamed chunk (to a whole answer: once), enough
to fill socket buffers or pass the gateway's max_answer_bytes (``"pad_from": K``: only the
streamed chunks from the K-th on); ``"unended": true`` ends each streamed event with one
line end, not a blank line (an event that never ends). A
streamed request with ``"tag": T`` has its fate kept for ``GET /streams/T``:
``{"state": "open"}`` while it is sent, then ``"finished"`` once its last byte is sent or
``"disconnected"`` when the client closed the connection before that; so has a request for
a whole answer with ``"tag"`` and ``"hang"``: ``"disconnected"`` if the client leaves during
the hang (it is answered nothing then), ``"finished"`` once it is answered.
A request with ``"echo": true`` gets the body received back under ``"received"``, the query
string of its URL under ``"query"``, its headers under ``"headers"`` and its
``Authorization`` header under ``"auth"`` (in the first chunk of a stream; a whole answer
always has ``"auth"``), so a test can see what the gateway forwarded (off by default: the
benchmarks' answers stay small). ``"stream_options": {"include_usage":
true}`` ends a stream with a usage chunk, as OpenAI does. ``"headers": {...}`` adds response
headers (``retry-after``, ``x-request-id``...); ``"gzip": true`` gzips a stream
(``content-encoding: gzip``, one flush per chunk) or a whole answer; ``"half_event": true``
makes ``die_after`` send the first half of the next event before it drops the connection;
``"after_done": S`` holds a stream open S seconds after its ``[DONE]``, then sends one more
event.
``UPSTREAM_CHUNK_DELAY`` (seconds) changes the spacing (benchmarks use 0);
``UPSTREAM_TLS_CERT`` and ``UPSTREAM_TLS_KEY`` (PEM files) serve HTTPS with that certificate.
``POST /control`` with ``{"hang": S}`` makes every later completion request wait S seconds
before anything else (a server that accepts requests but answers none in time, whatever
they ask: the body's ``hang`` would hang the gateway's fallback too), with ``{"status":
N}`` answers every later one with status N and an HTML page, as a proxy in front of a
server that is down does (0: answer again); ``GET /control`` says ``{"requests": N, "hang":
S, "status": N, "client_port": P}``, N the completion requests received so far and P the
client port of the last one (a new port: a new connection).
``"plain": TEXT`` answers TEXT as is, with the status ``force_status`` (default 200) and no
content type unless ``headers`` gives one (a server whose errors are not JSON).
``"utf8_headers": {...}`` adds response headers whose values are sent as UTF-8 bytes
(``"headers"`` must be Latin-1: Starlette encodes them so), such as ``x-request-id: €``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
import time
import zlib

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

NAME = sys.argv[1]
CHUNKS = 5
DELAY = float(os.environ.get("UPSTREAM_CHUNK_DELAY", "0.2"))
STREAMS: dict[str, str] = {}  # tag -> open | finished | disconnected
CONTROL = {"requests": 0, "hang": 0.0, "status": 0, "client_port": None}  # see /control


class TrackedStream(StreamingResponse):
    """A StreamingResponse that records in STREAMS whether its client stayed to the end."""

    def __init__(self, content: object, tag: str | None, **kwargs: object) -> None:
        super().__init__(content, **kwargs)
        self.tag = tag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tag is None:
            return await super().__call__(scope, receive, send)
        tag = self.tag
        STREAMS[tag] = "open"

        async def sent(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                STREAMS[tag] = "finished"

        async def received() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and STREAMS[tag] == "open":
                STREAMS[tag] = "disconnected"
            return message

        await super().__call__(scope, received, sent)


def _text(body: dict) -> str:
    return f"answer from {NAME} to model {body.get('model')}"


async def completion(request: Request) -> object:
    response = await _completion(request)
    for key, value in ((await request.json()).get("utf8_headers") or {}).items():
        response.raw_headers.append((key.lower().encode(), value.encode("utf-8")))
    return response


async def _completion(request: Request) -> Response:
    CONTROL["requests"] += 1
    CONTROL["client_port"] = request.client.port if request.client else None
    if CONTROL["hang"]:  # (no sleep(0) otherwise: the benchmarks time this server)
        await asyncio.sleep(CONTROL["hang"])
    if CONTROL["status"]:
        return Response(b"<html><body><h1>%d</h1></body></html>" % CONTROL["status"],
                        status_code=CONTROL["status"], media_type="text/html")
    body = await request.json()
    headers = body.get("headers") or {}
    if "plain" in body:  # (Response sets no content type without a media type)
        return Response(body["plain"].encode(), status_code=int(body.get("force_status", 200)),
                        headers=headers)
    if "force_status" in body:
        error = {"message": f"{NAME} refuses", "type": "invalid_request_error", "param": None,
                 "code": None}
        return JSONResponse({"error": error}, status_code=int(body["force_status"]),
                            headers=headers)
    tag = body.get("tag")
    if tag is not None and not body.get("stream"):
        STREAMS[tag] = "open"
        deadline = time.monotonic() + float(body.get("hang", 0))
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                STREAMS[tag] = "disconnected"
                return Response(status_code=499)  # (nobody receives it)
            await asyncio.sleep(0.05)
        STREAMS[tag] = "finished"
    else:
        await asyncio.sleep(float(body.get("hang", 0)))
    chat = request.url.path.endswith("/chat/completions")
    pad = {"pad": "x" * int(body["pad"])} if "pad" in body else {}
    echo = {"received": body, "query": request.url.query,
            "auth": request.headers.get("authorization"),
            "headers": dict(request.headers)} if body.get("echo") else {}
    if not body.get("stream"):
        choice = ({"index": 0, "message": {"role": "assistant", "content": _text(body)},
                   "finish_reason": "stop"} if chat else
                  {"index": 0, "text": _text(body), "finish_reason": "stop"})
        answer = JSONResponse({"id": "x", "object": "chat.completion" if chat else
                               "text_completion", "created": int(time.time()),
                               "model": f"{NAME}-upstream", "choices": [choice],
                               "auth": request.headers.get("authorization"), **echo, **pad},
                              headers=headers)
        if body.get("gzip"):  # the same answer, compressed
            return Response(gzip.compress(bytes(answer.body)), media_type="application/json",
                            headers={**headers, "content-encoding": "gzip"})
        return answer

    def event(i: int) -> bytes:
        delta = {"content": f"{NAME}-{i} "} if chat else None
        chunk = {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion",
                 "created": int(time.time()), "model": f"{NAME}-upstream",
                 "choices": [{"index": 0, "delta": delta} if chat else
                             {"index": 0, "text": f"{NAME}-{i} "}],
                 "sent_at": time.time(), **(echo if i == 0 else {}),
                 **(pad if i >= body.get("pad_from", 0) else {})}
        end = "\n" if body.get("unended") else "\n\n"
        return f"data: {json.dumps(chunk)}{end}".encode()

    async def events():
        n = int(body.get("chunks", CHUNKS))
        for i in range(n):
            if i == body.get("die_after"):
                if body.get("half_event"):  # a crash in the middle of writing an event
                    yield event(i)[:40]
                    await asyncio.sleep(DELAY)
                raise ConnectionAbortedError("upstream dies mid-stream")
            yield event(i)
            await asyncio.sleep(DELAY)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
            last = {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": f"{NAME}-upstream", "choices": [], "usage": usage}
            yield f"data: {json.dumps(last)}\n\n".encode()
        yield b"data: [DONE]\n\n"
        if "after_done" in body:  # an expert that holds the stream open after [DONE]
            await asyncio.sleep(float(body["after_done"]))
            yield b"data: after\n\n"

    async def gzipped():
        packer = zlib.compressobj(wbits=31)  # the gzip format
        sent = 0
        async for chunk in events():
            if sent == body.get("corrupt_after"):  # bytes no gzip stream holds
                yield b"\xff" * 64
            yield packer.compress(chunk) + packer.flush(zlib.Z_SYNC_FLUSH)
            sent += 1
        yield packer.flush()

    if body.get("gzip"):
        headers = {**headers, "content-encoding": "gzip"}
    return TrackedStream(gzipped() if body.get("gzip") else events(), body.get("tag"),
                         media_type="text/event-stream", headers=headers)


async def stream_state(request: Request) -> object:
    return JSONResponse({"state": STREAMS.get(request.path_params["tag"])})


async def control(request: Request) -> object:
    if request.method == "POST":
        asked = await request.json()
        if "hang" in asked:
            CONTROL["hang"] = float(asked["hang"])
        if "status" in asked:
            CONTROL["status"] = int(asked["status"])
    return JSONResponse(CONTROL)


app = Starlette(routes=[Route("/v1/chat/completions", completion, methods=["POST"]),
                        Route("/v1/completions", completion, methods=["POST"]),
                        Route("/streams/{tag}", stream_state),
                        Route("/control", control, methods=["GET", "POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                ssl_certfile=os.environ.get("UPSTREAM_TLS_CERT"),
                ssl_keyfile=os.environ.get("UPSTREAM_TLS_KEY"))
