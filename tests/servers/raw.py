"""A misbehaving OpenAI-ish server for the gateway tests, on raw asyncio streams (what an
HTTP framework would refuse to send): python tests/servers/raw.py PORT.

Any GET is answered ``{}`` (a health check). A POST's JSON body picks how its answer goes
wrong with ``"mode"``:

* ``ok`` (the default): a whole chat completion;
* ``trickle``: the headers (status ``"status"``, default 200), then the body one byte every
  ``"delay"`` seconds (default 0.3);
* ``stall``: the headers of an SSE stream, then nothing until the client leaves (what a
  stuck engine behind a server that sends a stream's headers at once answers);
* ``truncated``: a ``content-length`` 100 bytes more than the body sent, then the
  connection closed;
* ``garbage``: bytes that are not HTTP, then the connection closed;
* ``status``: the status line ``HTTP/1.1 <"status"> X`` (any three digits, 999 say);
* ``close_reused``: on a connection that has answered before, the connection closed
  without an answer (what a server closing an idle connection as the client reuses it
  does to that request); on a new connection, ``ok``;
* ``crash_reused``: the same, but the connection is closed ``"delay"`` seconds after the
  request was read (an expert killed while it works on it).
"""

from __future__ import annotations

import asyncio
import json
import sys

ANSWER = json.dumps({"id": "r", "object": "chat.completion", "model": "raw", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "raw"},
     "finish_reason": "stop"}]}).encode()


def _head(status: int, length: int) -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" \
        % (status, length)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    answered = False
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                           if line.lower().startswith("content-length:")), 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            mode = body.get("mode", "ok") if head.startswith("POST ") else "health"
            if mode in ("close_reused", "crash_reused"):
                if answered:
                    if mode == "crash_reused":
                        await asyncio.sleep(float(body.get("delay", 0.3)))
                    return
                mode = "ok"
            if mode == "health":
                writer.write(_head(200, 2) + b"{}")
            elif mode == "ok":
                writer.write(_head(200, len(ANSWER)) + ANSWER)
            elif mode == "trickle":
                writer.write(_head(int(body.get("status", 200)), len(ANSWER)))
                for i in range(len(ANSWER)):
                    await writer.drain()
                    await asyncio.sleep(float(body.get("delay", 0.3)))
                    writer.write(ANSWER[i:i + 1])
            elif mode == "stall":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                await writer.drain()
                await reader.read()  # (b"" once the client has closed the connection)
                return
            elif mode == "truncated":
                writer.write(_head(200, len(ANSWER) + 100) + ANSWER)
                await writer.drain()
                return
            elif mode == "garbage":
                writer.write(b"THIS IS NOT HTTP\r\n\r\n")
                await writer.drain()
                return
            elif mode == "status":
                writer.write(_head(int(body["status"]), len(ANSWER)) + ANSWER)
            await writer.drain()
            answered = True
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client left
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
