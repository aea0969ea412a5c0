"""The gateway served the ASGI 2.4 way, for the tests: python tests/servers/asgi24.py CONFIG PORT.

uvicorn speaks ASGI 2.3: a send to a client that has gone is dropped silently, and
Starlette's StreamingResponse watches ``receive`` for the disconnect itself, cancelling the
stream. Servers on ASGI >= 2.4 instead raise OSError from such a send, and Starlette then
takes another path: no watcher, and ``ClientDisconnect`` raised from the failed send, also
from the very first one (the headers), before its body iterator has been started.

This runs the gateway app under uvicorn behind a thin layer that keeps the 2.4 contract:
``spec_version`` 2.4 in the scope; the request body read up front, then the connection
watched for the client leaving; every send after that raises OSError.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn

from ir3de.serve import create_app, load_config


def asgi24(app: Any) -> Any:
    async def served(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        scope = {**scope, "asgi": {**scope.get("asgi", {}), "spec_version": "2.4"}}
        body = []
        while True:
            message = await receive()
            body.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        gone = asyncio.Event()

        async def watch() -> None:
            # uvicorn answers http.disconnect once the client leaves or the response ends
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def replayed() -> dict:
            if body:
                return body.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def checked(message: dict) -> None:
            if gone.is_set():
                raise OSError("the client has disconnected")
            await send(message)

        watcher = asyncio.create_task(watch())
        try:
            await app(scope, replayed, checked)
        finally:
            watcher.cancel()

    return served


if __name__ == "__main__":
    uvicorn.run(asgi24(create_app(load_config(sys.argv[1]))), host="127.0.0.1",
                port=int(sys.argv[2]), log_level="warning")
