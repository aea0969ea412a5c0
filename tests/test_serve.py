"""The gateway as real processes on 127.0.0.1: routing, streaming, fallback, admin, bad input.

Upstreams are tests/servers/upstream.py (a small OpenAI-compatible server answering with its
own name); the gateway runs under uvicorn through ``python -m ir3de.cli serve``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import pytest

from ir3de import DomainStats, Embedder, Router, compute_stats
from ir3de.cli import main
from ir3de.data import read_jsonl

for module in ("fastapi", "uvicorn", "httpx", "yaml", "prometheus_client", "multipart"):
    pytest.importorskip(module, reason="the gateway needs pip install 'ir3de[serve]'")

import httpx  # noqa: E402
import yaml  # noqa: E402

UPSTREAM = Path(__file__).parent / "servers" / "upstream.py"
ASGI24 = Path(__file__).parent / "servers" / "asgi24.py"
MATH = "Natalia sold clips to 48 of her friends in April, and then she sold half as many " \
       "clips in May. How many clips did Natalia sell altogether in April and May?"
CODE = "Write a python function to find the first repeated character in a given string."
LEGAL = "Does the clause grant the licensee an exclusive license to the licensed patents?"
TOKEN = "s3cret-admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(proc: subprocess.Popen, url: str, log: IO[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{url}: process exited with {proc.returncode}: "
                               f"{log.read().decode(errors='replace')}")
        try:
            # (verify=False: a TLS upstream's certificate comes from the test's own CA)
            httpx.get(url, timeout=0.5, verify=False)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: not up after {timeout} s")


class Proc:
    """A server process on a free port, stopped at teardown."""

    def __init__(self, argv: list[str], health: str, env: dict[str, str] | None = None,
                 port: int | None = None, scheme: str = "http") -> None:
        self.port = port or _free_port()
        self.scheme = scheme
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **(env or {})}
        self.health = health
        self.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        # stderr to a file, not a pipe: an unread pipe fills up with access-log lines
        # and blocks the server.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        _wait(self.proc, self.url + self.health, self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _upstream(name: str) -> Proc:
    return Proc([sys.executable, str(UPSTREAM), name, "{port}"], "/v1/models")


@pytest.fixture(scope="module")
def stats_files(data_dir: Path, emb: Embedder, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stats")
    sources = {"math": "reasoning/gsm8k/train.jsonl", "coding": "reasoning/mbpp/train.jsonl",
               "law": "domains/legalbench/train.jsonl"}
    out = {}
    for domain, rel in sources.items():
        texts = [r["text"] for r in read_jsonl(data_dir / rel)][:300]
        out[domain] = folder / f"{domain}.stats"
        compute_stats(emb, texts, domain=domain).save(out[domain])
    return out


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Proc]]:
    procs = {name: _upstream(name) for name in ("math", "coding", "law")}
    yield procs
    for p in procs.values():
        p.stop()


def _config(folder: Path, stats: dict[str, Path], ups: dict[str, Proc],
            timeouts: dict[str, float] | None = None, **extra) -> Path:
    """gateway.yaml with math and coding (each ``timeout`` 5 s unless ``timeouts`` says)."""
    config = {"name": "ir3de",
              "router": {"stats": [str(stats["math"]), str(stats["coding"])]},
              "experts": {"math": {"url": ups["math"].url + "/v1", "model": "qwen-math",
                                   "timeout": 5},
                          "coding": {"url": ups["coding"].url + "/v1", "timeout": 5}},
              "fallback": "math", "max_body_bytes": 20_000,
              "state_dir": str(folder / "state"), **extra}
    for name, seconds in (timeouts or {}).items():
        config["experts"][name]["timeout"] = seconds
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _gateway(config: Path, token: str | None = TOKEN, env: dict[str, str] | None = None,
             log_level: str = "info") -> Proc:
    env = {"IR3DE_ADMIN_TOKEN": token or "", **(env or {})}
    return Proc([sys.executable, "-m", "ir3de.cli", "serve", "--config", str(config),
                 "--port", "{port}", "--log-level", log_level], "/healthz", env=env)


@pytest.fixture(scope="module")
def gateway(stats_files, upstreams, tmp_path_factory) -> Iterator[Proc]:
    proc = _gateway(_config(tmp_path_factory.mktemp("gw"), stats_files, upstreams))
    yield proc
    proc.stop()


def _chat(text: str, model: str = "ir3de", **extra) -> dict:
    return {"model": model, "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": text}], **extra}


def test_routes_math_and_code_to_their_experts(gateway: Proc) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH))
    assert r.status_code == 200
    assert r.headers["x-ir3de-expert"] == "math"
    assert 0 < float(r.headers["x-ir3de-confidence"]) <= 1
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "answer from math to model qwen-math"
    assert body["model"] == "math-upstream"  # passed through as upstream reports it
    r = httpx.post(gateway.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE})
    assert r.headers["x-ir3de-expert"] == "coding"
    assert r.json()["choices"][0]["text"] == "answer from coding to model coding"


def test_explicit_expert_model_goes_straight_there(gateway: Proc) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH, model="coding"))
    assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "coding"
    assert "x-ir3de-confidence" not in r.headers


def test_streaming_arrives_chunk_by_chunk(gateway: Proc) -> None:
    arrivals = []
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      json=_chat(MATH, stream=True)) as r:
        assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math"
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line[6:]))
    assert arrivals[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in arrivals[:-1]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == \
        [f"math-{i} " for i in range(5)]
    # The upstream spaces its chunks 0.2 s apart: the first reached us long before the last.
    assert arrivals[-1][0] - arrivals[0][0] > 0.6


def test_models_health_and_metrics(gateway: Proc) -> None:
    models = httpx.get(gateway.url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["ir3de", "math", "coding"]
    assert httpx.get(gateway.url + "/healthz").json()["status"] == "ok"
    before = _metrics(gateway).get('ir3de_request_seconds_count{expert="math"}', 0.0)
    httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH))
    text = httpx.get(gateway.url + "/metrics").text
    assert 'ir3de_requests_total{expert="math",status="200"}' in text
    assert "ir3de_routing_seconds_count" in text and "ir3de_in_flight" in text
    # Upstream waits and whole requests in buckets up to minutes (the default buckets
    # stopped at 10 s, where an expert's timeout of 60 s only begins).
    assert 'ir3de_upstream_seconds_bucket{expert="math",le="120.0"}' in text
    assert _wait_for(lambda: _metrics(gateway)['ir3de_request_seconds_count{expert="math"}']
                     == before + 1)
    assert 'ir3de_request_seconds_bucket{expert="math",le="300.0"}' in text


_BAD_REQUESTS = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"model": "ir3de"}).encode(), 400, "'messages' must be a non-empty list"),
    (json.dumps(_chat("x" * 30_000)).encode(), 413, "exceeds the limit"),
    (json.dumps(_chat(MATH, model="gpt-5")).encode(), 404, "model 'gpt-5' does not exist"),
    # an unknown name is shown cut, not echoed whole into the error and the log line
    (json.dumps(_chat(MATH, model="m" * 5000)).encode(), 404,
     f"model {'m' * 256!r}… (5000 characters) does not exist"),
    # valid JSON that cannot be forwarded as JSON: an unpaired surrogate, NaN
    (json.dumps(_chat("\ud800 hi")).encode(), 400,
     "holds an unpaired surrogate escape (\\ud800-\\udfff), which is no text"),
    (json.dumps(_chat(MATH, model="math", temperature=float("nan"))).encode(), 400,
     "NaN is not a JSON number"),
    # too large for a float: inf, which the body forwarded could not hold (was a text 500)
    (b'{"model": "ir3de", "messages": [{"role": "user", "content": "hi"}], '
     b'"temperature": 1e999}', 400, "1e999 is beyond a float's range: NaN and Infinity "
                                    "cannot be forwarded as JSON"),
    (b'{"model": "math", "messages": [{"role": "user", "content": "hi"}], '
     b'"temperature": -1E+400}', 400, "cannot be forwarded as JSON"),
    (b"[" * 5000 + b"]" * 5000, 400, "nested too deeply"),
    # valid JSON Python will not convert: was its advice to call sys.set_int_max_str_digits()
    (b'{"model": "math", "messages": [{"role": "user", "content": "hi"}], "max_tokens": '
     + b"9" * 5000 + b"}", 400, "request body holds an integer of 5000 digits; at most 4300 "
                                "are read"),
    (json.dumps(_chat(MATH, model=["math"])).encode(), 400, "'model' must be a string"),
    (json.dumps(_chat(MATH, stream="false")).encode(), 400, "'stream' must be true or false"),
    # content neither a string nor a list: named, not "the prompt to route is empty"
    (json.dumps({"model": "ir3de", "messages": [{"role": "user", "content": 5}]}).encode(), 400,
     "'messages[0].content' must be a string or a list of content parts, got number"),
    (json.dumps({"model": "ir3de", "messages": [
        {"role": "system", "content": {"text": "x"}}, {"role": "user", "content": MATH}]}
    ).encode(), 400, "'messages[0].content' must be a string or a list of content parts, "
                     "got object"),
    (json.dumps({"model": "ir3de", "messages": [{"role": "user", "content": [
        {"type": "text", "text": 5}]}]}).encode(), 400,
     "'messages[0].content[0].text' must be a string"),
    (json.dumps({"model": "ir3de", "messages": [{"role": "user", "content": ["hi"]}]}).encode(),
     400, "'messages[0].content[0]' must be a content part object, got string"),
    # JSON's type names, not Python's (was "got NoneType")
    (json.dumps(_chat(MATH, model=None)).encode(), 400, "'model' must be a string, got null"),
    (json.dumps(_chat(MATH, model=True)).encode(), 400, "'model' must be a string, got boolean"),
    (json.dumps(_chat(MATH, model=["math"])).encode(), 400,
     "'model' must be a string, got array"),
]


@pytest.mark.parametrize(("body", "status", "message"), _BAD_REQUESTS)
def test_bad_requests_get_openai_errors(gateway: Proc, body: bytes, status: int,
                                        message: str) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert message in error["message"] and {"type", "param", "code"} <= set(error)
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_an_unknown_model_name_is_cut_in_the_access_log(gateway: Proc) -> None:
    """A client's unknown model name was written whole twice into its access line (as the
    model and in the error): 1.8 MB lines from 0.9 MB requests."""
    r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH, model="m" * 15_000))
    assert r.status_code == 404 and len(r.text) < 1000
    request_id = r.headers["x-ir3de-request-id"]
    assert _wait_for(lambda: any(line["request_id"] == request_id
                                 for line in _access_log(gateway)))
    line = next(line for line in _access_log(gateway) if line["request_id"] == request_id)
    assert line["model"] == f"{'m' * 256!r}… (15000 characters)"
    assert len(json.dumps(line)) < 1500


# Bodies past this size are read by the gateway's reader processes, not on its event loop
# (serve._INLINE_BODY_BYTES, 64 KiB): trailing white space takes them there.
_PAD = b" " * (64 * 1024)


@pytest.fixture(scope="module")
def gateway_large(stats_files, upstreams, tmp_path_factory) -> Iterator[Proc]:
    proc = _gateway(_config(tmp_path_factory.mktemp("gwl"), stats_files, upstreams,
                            max_body_bytes=2_000_000))
    yield proc
    proc.stop()


def _readers(gateway: Proc) -> set[int]:
    """Process ids of the gateway's reader processes (its spawned children that are not
    multiprocessing's resource tracker)."""
    pid = gateway.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children if b"resource_tracker" not in
            Path(f"/proc/{c}/cmdline").read_bytes()}


@pytest.mark.parametrize(("body", "status", "message"),
                         [case for case in _BAD_REQUESTS if case[1] != 413])
def test_large_bad_requests_get_the_same_errors(gateway_large: Proc, body: bytes, status: int,
                                                message: str) -> None:
    """What a reader process finds wrong with a large body is the same 4xx, the same
    message, as for a small one read on the event loop."""
    r = httpx.post(gateway_large.url + "/v1/chat/completions", content=body + _PAD,
                   headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert message in error["message"] and {"type", "param", "code"} <= set(error)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_large_bodies_are_read_by_reader_processes(gateway_large: Proc) -> None:
    """A large body was parsed on the event loop: a 1 MB body of nested arrays held it
    0.2 s, stalling every other request (bench_large_bodies.py). Reader processes parse
    it now; what reaches the expert is the client's body, its model replaced, and a
    reader that died (killed: out of memory, say) is replaced without failing a request."""
    url = gateway_large.url + "/v1/chat/completions"
    body = _chat(MATH, echo=True, metadata={"ids": list(range(30_000)), "note": "é ✓"})
    assert len(json.dumps(body)) > 64 * 1024
    r = httpx.post(url, json=body, timeout=30)
    assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math"
    assert r.json()["received"] == {**body, "model": "qwen-math"}
    readers = _readers(gateway_large)
    assert readers
    # streamed, and sent to a named expert: the same reading
    with httpx.stream("POST", url, json={**body, "model": "coding", "stream": True},
                      timeout=30) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: {")]
    assert json.loads(events[0][6:])["received"]["model"] == "coding"
    for pid in readers:  # idle readers killed: the next body goes to a new one
        os.kill(pid, signal.SIGKILL)
    _wait_gone(readers)
    r = httpx.post(url, json=body, timeout=30)
    assert r.status_code == 200 and r.json()["received"] == {**body, "model": "qwen-math"}
    readers = _readers(gateway_large)
    assert readers
    # a reader killed while it parses: the body is read again by another
    slow = {**body, "metadata": {"ids": [[[[1]]]] * 150_000}}  # 1.6 MB, ~0.3 s to parse
    answer: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answer.append(httpx.post(url, json=slow,
                                                                      timeout=60)))
    sender.start()
    time.sleep(0.2)
    for pid in readers:
        os.kill(pid, signal.SIGKILL)
    sender.join()
    assert answer[0].status_code == 200, answer[0].text
    assert answer[0].json()["received"]["metadata"] == slow["metadata"]


def _wait_gone(pids: set[int]) -> None:
    """Wait until each of ``pids`` has exited (a zombie until its parent reaps it)."""
    for pid in pids:
        for _ in range(100):
            try:
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
                    break
            # reaped: before the open (no file), or between the open and the read (ESRCH)
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_readers_end_with_the_gateway(stats_files, upstreams, tmp_path: Path,
                                      how: str) -> None:
    """Readers outlived a gateway stopped by SIGTERM (some of the time) or kill -9
    (always), each holding ~55 MB, orphaned for good (QA)."""
    gateway = _gateway(_config(tmp_path, stats_files, upstreams, max_body_bytes=2_000_000))
    try:
        body = _chat(MATH, metadata={"ids": list(range(30_000))})
        assert httpx.post(gateway.url + "/v1/chat/completions", json=body,
                          timeout=30).status_code == 200
        readers = _readers(gateway)
        assert readers
        os.kill(gateway.proc.pid, getattr(signal, how))
        gateway.proc.wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists()
                                                  for p in readers):
            time.sleep(0.1)
        assert not [p for p in readers if Path(f"/proc/{p}").exists()]
    finally:
        gateway.stop()


def test_the_forwarded_body_is_the_clients_with_its_model_replaced() -> None:
    from ir3de.serve import _read_completion

    chat = {"temperature": 0.5, "model": "ir3de", "messages": [
        {"role": "user", "content": "Ünïcode ✓"}], "tools": []}
    completion = _read_completion(json.dumps(chat).encode(), True, "last_user")
    assert completion.text == "Ünïcode ✓" and completion.text_error is None
    assert json.loads(completion.payload("qwen/math")) == {**chat, "model": "qwen/math"}
    assert "Ünïcode".encode() in completion.payload("m")  # UTF-8, as httpx sends JSON
    bare = _read_completion(b'{"model": "math"}', True, "last_user")  # (nothing but a model)
    assert bare.text_error == "'messages' must be a non-empty list of message objects"
    assert json.loads(bare.payload("qwen")) == {"model": "qwen"}
    unnamed = _read_completion(b'{"prompt": [1, 2]}', False, "last_user")
    assert not unnamed.has_model and unnamed.text == "" and unnamed.text_error is None
    assert json.loads(unnamed.payload("m")) == {"model": "m", "prompt": [1, 2]}


def test_gateway_errors_name_the_field_and_use_openai_json(gateway: Proc) -> None:
    r = httpx.post(gateway.url + "/v1/completions", json={"model": "ir3de", "prompt": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    for r, status in ((httpx.get(gateway.url + "/v1/nowhere"), 404),
                      (httpx.get(gateway.url + "/v1/chat/completions"), 405)):
        assert r.status_code == status and r.json()["error"]["message"], r.text
    r = httpx.post(gateway.url + "/v1/responses", json={"model": "ir3de", "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["message"] == (  # was "Not Found"
        "Invalid URL (POST /v1/responses): this gateway serves POST /v1/chat/completions, "
        "POST /v1/completions and GET /v1/models")
    assert httpx.head(gateway.url + "/healthz").status_code == 200
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    r = httpx.post(gateway.url + "/v1/chat/completions",  # nothing to route: the fallback
                   json={"model": "ir3de", "messages": [{"role": "user", "content": image}]})
    assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math"
    assert 'ir3de_requests_total{expert="(gateway)",status="400"}' in httpx.get(
        gateway.url + "/metrics").text


def test_upstream_4xx_is_returned_as_is(gateway: Proc) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH, force_status=422))
    assert r.status_code == 422 and r.json()["error"]["message"] == "math refuses"
    assert r.headers["x-ir3de-expert"] == "math"


def test_upstream_401_and_403_are_the_gateways_credentials(gateway: Proc) -> None:
    """A client with a valid gateway key got the expert's 401, "Incorrect API key
    provided: sk-cod***1234": an error about a key it never sent, showing part of the
    operator's."""
    leak = {"error": {"message": "Incorrect API key provided: sk-cod***1234",
                      "code": "invalid_api_key"}}
    for status in (401, 403):
        for stream in (False, True):
            r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(
                MATH, model="math", stream=stream, force_status=status,
                plain=json.dumps(leak)))
            assert r.status_code == 502, r.text
            assert r.json()["error"]["message"] == (
                f"expert 'math' refused the gateway's credentials ({status}): it needs a key: "
                "set the expert's api_key_env")
            assert "sk-cod" not in r.text and r.headers["x-should-retry"] == "false"
    events = [e for e in _log_events(gateway) if e["event"] == "upstream_refused"]
    assert events[-1] == {"event": "upstream_refused", "expert": "math", "status": 403,
                          "request_id": r.headers["x-ir3de-request-id"]}


def test_api_key_header_sends_the_key_as_azure_wants_it(stats_files, upstreams,
                                                       tmp_path) -> None:
    """Azure OpenAI takes its key in an api-key header, not as a Bearer authorization: an
    Azure expert could not be given its key."""
    config = _with_experts(_config(tmp_path, stats_files, upstreams),
                           azure={"url": upstreams["math"].url + "/v1?api-version=2024-10-21",
                                  "api_key_env": "AZ_KEY", "api_key_header": "Api-Key"})
    gw = _gateway(config, env={"AZ_KEY": "az-secret"})
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH, model="azure",
                                                                   echo=True))
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["api-key"] == "az-secret" and r.json()["auth"] is None
        r = httpx.post(gw.url + "/admin/experts", headers=_admin(),  # the same by upload
                       data={"url": upstreams["law"].url + "/v1", "api_key_env": "AZ_KEY",
                             "api_key_header": "api-key"},
                       files={"stats": ("law.stats", stats_files["law"].read_bytes())})
        assert r.status_code == 200, r.text
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH, model="law",
                                                                   echo=True))
        assert r.json()["headers"]["api-key"] == "az-secret", r.text
    finally:
        gw.stop()


def test_500_requests_at_50_concurrent(gateway: Proc) -> None:
    async def run() -> list[int | BaseException]:
        limit = asyncio.Semaphore(50)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as c:
            async def one(i: int) -> int:
                async with limit:
                    r = await c.post(gateway.url + "/v1/chat/completions",
                                     json=_chat(MATH if i % 2 else CODE))
                    return r.status_code
            return await asyncio.gather(*(one(i) for i in range(500)), return_exceptions=True)

    outcomes = asyncio.run(run())
    failed = [repr(o) for o in outcomes if o != 200]
    assert not failed, (failed[:5], _log_text(gateway)[-3000:])  # (what the gateway said)


def test_keep_alive_defaults_outlast_clients_and_not_experts(stats_files, upstreams,
                                                             tmp_path: Path) -> None:
    """A server closing an idle connection as the client reuses it fails that request
    (benchmarks/bench_keepalive.py: 3-4 % of requests idling ~5 s). So the gateway keeps a
    client's idle connection longer than httpx (the openai SDK's transport) keeps one, and
    drops an idle upstream connection before uvicorn (vLLM's server) closes it."""
    import uvicorn

    from ir3de.errors import IR3DEError
    from ir3de.serve import load_config

    config = load_config(_config(tmp_path, stats_files, upstreams))
    assert config.keep_alive_seconds > httpx.Limits().keepalive_expiry
    server_side = uvicorn.Config(app=None).timeout_keep_alive  # type: ignore[arg-type]
    assert config.upstream_keep_alive_seconds < server_side
    # and the gateway does drop them: an idle connection older than the setting is not reused
    gw = _gateway(_config(tmp_path, stats_files, upstreams, upstream_keep_alive_seconds=0.5))
    try:
        def port() -> int:
            r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH, model="math"))
            assert r.status_code == 200
            return httpx.get(upstreams["math"].url + "/control").json()["client_port"]

        first = port()
        assert port() == first  # reused at once
        time.sleep(1.0)
        assert port() != first  # idle 1 s > 0.5 s: a new connection (httpx's default: 5 s)
    finally:
        gw.stop()
    for value, message in ((0, "greater than 0"), ("4", "valid number"),
                           (float("nan"), "finite number")):
        with pytest.raises(IR3DEError, match=rf"upstream_keep_alive_seconds: .*{message}"):
            load_config(_config(tmp_path, stats_files, upstreams,
                                upstream_keep_alive_seconds=value))


def test_dead_upstream_falls_back_without_hanging(stats_files, upstreams, tmp_path) -> None:
    coder = _upstream("coding")
    gw = _gateway(_config(tmp_path, stats_files, {**upstreams, "coding": coder}))
    try:
        assert httpx.post(gw.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE}
                          ).headers["x-ir3de-expert"] == "coding"
        coder.stop()
        start = time.monotonic()
        r = httpx.post(gw.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE},
                       timeout=20)
        assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math"
        assert time.monotonic() - start < 5
        assert 'ir3de_fallbacks_total{reason="upstream_failure"}' in httpx.get(
            gw.url + "/metrics").text
        # Routed to a dead expert whose fallback is dead too: 502, every time with
        # cooldowns off (failures are counted all the same).
        (tmp_path / "dead").mkdir()  # (a state_dir of its own: one per gateway)
        upstreams_dead = _config(tmp_path / "dead", stats_files, {
            "math": coder, "coding": coder, "law": coder}, cooldown_failures=0)
        gw2 = _gateway(upstreams_dead)
        try:
            for _ in range(4):  # the default would have started a cooldown after 3
                r = httpx.post(gw2.url + "/v1/chat/completions", json=_chat(MATH), timeout=20)
                assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
            assert httpx.get(gw2.url + "/healthz").json()["cooling_down"] == {}
            math = _experts(gw2)["math"]
            assert (math["state"], math["consecutive_failures"], math["cooldowns"]) == \
                ("ok", 4, 0)
            metrics = _metrics(gw2)
            assert metrics["ir3de_experts_cooling_down"] == 0
            assert not any(k.startswith("ir3de_cooldowns_total") for k in metrics)
        finally:
            gw2.stop()
    finally:
        gw.stop()
        coder.stop()


def test_timeouts_and_broken_streams_are_reported(gateway: Proc, stats_files, upstreams,
                                                   tmp_path) -> None:
    # A stream the upstream breaks off ends with an SSE error event, not a bare cut; the
    # request counts as in flight until then.
    events = []
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      json=_chat(MATH, stream=True, die_after=2)) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and not events:
                gauge = httpx.get(gateway.url + "/metrics").text
                assert "ir3de_in_flight 1.0" in gauge
            if line:
                events.append(line)
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert events[-2] == "event: error" and "broke off the stream" in error["message"]
    assert sum(e.startswith("data: {") for e in events) == 3  # two chunks and the error
    assert 'kind="stream_RemoteProtocolError"' in httpx.get(gateway.url + "/metrics").text
    # The 200 went out before the failure: the log says it, under the request's id (a
    # broken stream left only a counter, and an access line like a success's).
    request_id = r.headers["x-ir3de-request-id"]
    assert _wait_for(lambda: any(line["request_id"] == request_id
                                 for line in _access_log(gateway)))
    line = next(line for line in _access_log(gateway) if line["request_id"] == request_id)
    assert (line["status"], line["error"]) == (200, error["message"])
    failure = next(e for e in _log_events(gateway) if e.get("request_id") == request_id)
    assert (failure["event"], failure["expert"], failure["error"]) == \
        ("upstream_error", "math", "RemoteProtocolError")

    # An expert that does not answer in time: 504 naming its timeout (math is the
    # fallback, so there is nowhere else to go).
    gw = _gateway(_config(tmp_path, stats_files, upstreams, {"math": 0.5}))
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH, hang=2), timeout=10)
        assert r.status_code == 504, r.text
        assert "did not answer within 0.5 s (ReadTimeout)" in r.json()["error"]["message"]
    finally:
        gw.stop()


def test_all_connections_busy_is_a_503_not_an_expert_timeout(stats_files, upstreams,
                                                             tmp_path) -> None:
    """A request that waited its expert's timeout for one of the gateway's own connections
    was answered 504 "expert did not answer within ... (PoolTimeout)", blaming the expert,
    and counted towards its cooldown; routed, it waited again for the fallback."""
    config = _config(tmp_path, stats_files, upstreams, {"coding": 0.5}, max_connections=1,
                     cooldown_failures=1)
    gw = _gateway(config)
    try:
        # a stream of 20 chunks, 0.2 s apart, holds the one connection for 4 s
        with httpx.stream("POST", gw.url + "/v1/chat/completions",
                          json=_chat(MATH, model="math", stream=True, chunks=20)) as held:
            assert held.status_code == 200
            start = time.monotonic()
            r = httpx.post(gw.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE},
                           timeout=10)
            waited = time.monotonic() - start
            assert r.status_code == 503, r.text
            assert (r.headers["retry-after"], r.headers["x-ir3de-expert"]) == ("1", "coding")
            error = r.json()["error"]
            assert error["code"] == "gateway_busy"
            assert error["message"] == (
                "the request to expert 'coding' was not sent: all 1 of the gateway's "
                "upstream connections stayed busy for 0.5 s (max_connections)")
            assert waited < 2  # the fallback (math) was not waited for too
        # not the expert's failure: coding is not cooling down, and answers once free
        assert httpx.get(gw.url + "/healthz").json()["cooling_down"] == {}
        r = httpx.post(gw.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE})
        assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "coding"
    finally:
        gw.stop()


def test_logged_urls_hide_credential_query_parameters(stats_files, upstreams,
                                                      tmp_path) -> None:
    """GET /admin/experts showed ?api-key=... of an expert URL as given."""
    url = upstreams["coding"].url + "/v1?api-key=s3cr3t&api-version=2024-02-01&sig=a%2Fb"
    gw = _gateway(_with_experts(_config(tmp_path, stats_files, upstreams),
                                coding={"url": url}))
    try:
        listed = _experts(gw)["coding"]["url"]
        assert listed == (upstreams["coding"].url
                          + "/v1?api-key=***&api-version=2024-02-01&sig=***")
    finally:
        gw.stop()


def _wait_for(probe, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.05)
    return probe()


@pytest.fixture(scope="module")
def gateway24(stats_files, upstreams, tmp_path_factory) -> Iterator[Proc]:
    """The gateway served the ASGI 2.4 way (a send to a gone client raises OSError)."""
    config = _config(tmp_path_factory.mktemp("gw24"), stats_files, upstreams)
    proc = Proc([sys.executable, str(ASGI24), str(config), "{port}"], "/healthz")
    yield proc
    proc.stop()


@pytest.mark.parametrize("server", ["uvicorn", "asgi24"])
@pytest.mark.parametrize("when", ["before_first_chunk", "stalled_mid_stream", "idle"])
def test_client_gone_closes_the_upstream_stream(request, upstreams: dict[str, Proc],
                                                server: str, when: str) -> None:
    # A long upstream stream (100 chunks, 20 s) whose client leaves: the gateway must close
    # its upstream connection at once and stop counting the stream as in flight, however
    # far the relay had got, under uvicorn and the ASGI 2.4 way:
    # * before_first_chunk: the client leaves while the gateway waits for the upstream's
    #   headers (held 0.3 s), so nothing has been relayed when the response starts (under
    #   ASGI 2.4 its first send fails: the body generator is never started);
    # * stalled_mid_stream: 4 MB chunks the client does not read: the gateway is stuck
    #   sending one when the client leaves;
    # * idle: the client reads the first chunk and leaves while the gateway waits for the
    #   next one from the upstream.
    gateway = request.getfixturevalue("gateway" if server == "uvicorn" else "gateway24")
    tag = f"{server}-{when}-{time.monotonic_ns()}"
    stream = _chat(MATH, stream=True, chunks=100, tag=tag)
    if when == "before_first_chunk":
        stream["hang"] = 0.3
    elif when == "stalled_mid_stream":
        stream["pad"] = 4_000_000
    body = json.dumps(stream).encode()
    state = upstreams["math"].url + f"/streams/{tag}"
    logged = len(_access_log(gateway))
    with socket.socket() as raw:
        raw.settimeout(5)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up at once
        raw.connect(("127.0.0.1", gateway.port))
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                    b"content-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n" % len(body) + body)
        if when == "before_first_chunk":
            time.sleep(0.1)
        elif when == "stalled_mid_stream":
            assert _wait_for(lambda: httpx.get(state).json()["state"] == "open")
            time.sleep(0.2)  # the gateway is stuck sending the first chunk
        else:
            received = b""
            while b"data: {" not in received:
                received += raw.recv(65536)
            assert received.startswith(b"HTTP/1.1 200")
    assert _wait_for(lambda: httpx.get(state).json()["state"] == "disconnected"), \
        httpx.get(state).json()
    assert _wait_for(lambda: "ir3de_in_flight 0.0" in httpx.get(gateway.url + "/metrics").text)
    if server == "uvicorn":  # (asgi24.py does not set up the access log)
        # logged as an answer not sent to its end (it was logged as a 200 like any other)
        assert _wait_for(lambda: len(_access_log(gateway)) > logged)
        assert _access_log(gateway)[logged]["complete"] is False


@pytest.mark.parametrize("server", ["uvicorn", "asgi24"])
def test_client_gone_cancels_a_whole_answer(request, upstreams: dict[str, Proc],
                                            server: str) -> None:
    """A client that left during a non-streaming request left the upstream request
    running for nobody, up to the expert's timeout, and then logged with status 200; the
    request counted as in flight all the while."""
    gateway = request.getfixturevalue("gateway" if server == "uvicorn" else "gateway24")
    tag = f"whole-{server}-{time.monotonic_ns()}"
    body = json.dumps(_chat(MATH, model="math", hang=4, tag=tag)).encode()
    state = upstreams["math"].url + f"/streams/{tag}"
    with _raw_request(gateway, b"POST /v1/chat/completions HTTP/1.1\r\n"
                               b"content-length: %d" % len(body), body):
        assert _wait_for(lambda: httpx.get(state).json()["state"] == "open")
        assert "ir3de_in_flight 1.0" in httpx.get(gateway.url + "/metrics").text
    assert _wait_for(lambda: httpx.get(state).json()["state"] == "disconnected", 2), \
        httpx.get(state).json()
    assert _wait_for(lambda: "ir3de_in_flight 0.0" in httpx.get(gateway.url + "/metrics").text)
    if server == "uvicorn":  # (the ASGI 2.4 server of the tests writes no access log)
        line = _access_log(gateway)[-1]
        assert (line["status"], line["expert"], line["error"]) == (
            499, "math", "the client disconnected before the answer was ready")
    # counted under the expert it was waiting for, as logged (was "(gateway)")
    assert _metrics(gateway)['ir3de_requests_total{expert="math",status="499"}'] >= 1


def _admin(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_admin_add_remove_settings_and_restart(stats_files, upstreams, tmp_path,
                                               data_dir: Path, emb: Embedder) -> None:
    config = _config(tmp_path, stats_files, upstreams)
    gw = _gateway(config)
    try:
        assert httpx.get(gw.url + "/admin/experts").status_code == 401
        assert httpx.get(gw.url + "/admin/experts", headers=_admin("wrong")).status_code == 401
        listed = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
        assert [e["name"] for e in listed["experts"]] == ["math", "coding"]
        # the settings a geo nb router reads: no k (topk only), no lam (ridge only)
        assert {"model", "alpha", "pairs", "selector"} <= listed.keys()
        assert "k" not in listed and "lam" not in listed

        bad = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                         data={"url": upstreams["law"].url + "/v1"},
                         files={"stats": ("law.stats", b"garbage bytes")})
        assert bad.status_code == 400 and "error" in bad.json()
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json() == listed

        law = stats_files["law"].read_bytes()
        added = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1"},
                           files={"stats": ("law.stats", law)})
        assert added.status_code == 200, added.text
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(LEGAL))
        assert r.headers["x-ir3de-expert"] == "law"
        again = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1"},
                           files={"stats": ("law.stats", law)})
        assert again.status_code == 409, again.text  # Conflict, as for an unrouted endpoint
        assert again.json()["error"] == {
            "message": "expert 'law' already exists; remove it first (DELETE "
                       "/admin/experts/law)",
            "type": "invalid_request_error", "param": "name", "code": "expert_exists"}

        for ignored, message in (({"k": 7}, "k applies to selector topk only; the router "
                                              "would use selector geo"),
                                 ({"lam": 1.0}, "lam applies to model ridge only; the router "
                                                "would use model nb")):
            r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json=ignored)
            assert r.status_code == 400 and r.json()["error"]["message"] == message, r.text
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                        json={"k": 7, "selector": "topk"})
        assert s.status_code == 200 and s.json()["k"] == 7
        assert httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                           json={"k": 0}).status_code == 400
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"alpha": 0.5})
        assert s.status_code == 200 and (s.json()["model"], s.json()["alpha"]) == ("nb", 0.5)
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"alpha": -1})
        assert bad.status_code == 400 and "α must be" in bad.json()["error"]["message"]
        # the pair mass is "auto", chosen from the prompt counts: 300 per expert, full-size;
        # not listed as a setting while the selector (topk) reads no pairs
        assert "pairs" not in s.json() and "unseen" not in s.json()
        # the default's, the spelling back-off "auto" (full-size too)
        plain = {"skips": None, "unseen": "score", "spelling": 0.25, "spelling_prior": None}
        assert s.json()["smoothing"] == {"alpha": 0.5, "pairs": 1e5, **plain}
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"pairs": None})
        assert s.status_code == 200 and s.json()["pairs"] is None
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"alpha": "auto"})
        assert s.status_code == 200 and s.json()["smoothing"] == {"alpha": 0.03, "pairs": None,
                                                                  **plain}
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"skips": "auto"})
        assert bad.status_code == 400 and bad.json()["error"]["message"] == (
            "skips applies to selector geo only; the router would use selector topk")
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"unseen": "score"})
        assert bad.status_code == 400 and bad.json()["error"]["message"] == (
            "unseen applies to selector geo only; the router would use selector topk")
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                          json={"unseen": "x", "selector": "geo"})
        assert bad.status_code == 400 and "unseen must be one of auto, score, ignore" in \
            bad.json()["error"]["message"]
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"alpha": "x"})
        assert bad.status_code == 400 and "or 'auto'" in bad.json()["error"]["message"]
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"pairs": 0})
        assert bad.status_code == 400 and "pair Dirichlet mass" in bad.json()["error"]["message"]
        # the spelling back-off changes every token's row, so the topk selector reads it too
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"spelling": 0.5})
        assert s.status_code == 200 and s.json()["spelling"] == 0.5
        assert s.json()["smoothing"]["spelling"] == 0.5
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"spelling": None})
        assert s.status_code == 200 and s.json()["smoothing"] == {"alpha": 0.03, "pairs": None,
                                                                  **plain, "spelling": None}
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"spelling": -1})
        assert bad.status_code == 400 and "spelling back-off's weight" in \
            bad.json()["error"]["message"]
        # a weight whose table overflows: was taken, and every prompt went to the first
        # expert with confidence NaN (the threshold's fallback never fired)
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"spelling": 1e308})
        assert bad.status_code == 400 and "the spelling back-off's weight 1e+308 is too large" \
            in bad.json()["error"]["message"]
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"alpha": 10**400})
        assert bad.status_code == 400 and "the smoothing α must be a finite number" in \
            bad.json()["error"]["message"]  # (was numpy's "ufunc 'isfinite' not supported")
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json()["smoothing"][
            "spelling"] is None
        # the spelling prior in place of the added term (both at once are refused)
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                        json={"spelling_prior": 1e5})
        assert s.status_code == 200 and s.json()["spelling_prior"] == 1e5
        assert s.json()["smoothing"]["spelling_prior"] == 1e5
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"spelling": 0.5})
        assert bad.status_code == 400 and "the spelling back-off enters once" in \
            bad.json()["error"]["message"]
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(),  # back, in one change
                        json={"spelling": 0.25, "spelling_prior": None})
        assert s.status_code == 200
        assert (s.json()["smoothing"]["spelling"], s.json()["smoothing"]["spelling_prior"]) \
            == (0.25, None)
        bad = httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                          json={"spelling_prior": 1e5})
        assert bad.status_code == 400 and "set the other to None (null in JSON" in \
            bad.json()["error"]["message"]
        assert httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                           json={"spelling": None}).status_code == 200

        assert 'ir3de_request_seconds_count{expert="law"} 1.0' in \
            httpx.get(gw.url + "/metrics").text
        # a stream to law in flight across its removal (five chunks, 0.2 s apart)
        with httpx.stream("POST", gw.url + "/v1/chat/completions",
                          json=_chat(LEGAL, model="law", stream=True)) as streamed:
            assert streamed.headers["x-ir3de-expert"] == "law"
            r = httpx.delete(gw.url + "/admin/experts/law", headers=_admin())
            assert r.status_code == 200
            assert b"[DONE]" in b"".join(streamed.iter_bytes())
        other = httpx.post(gw.url + "/v1/chat/completions", json=_chat(LEGAL)
                           ).headers["x-ir3de-expert"]
        assert other != "law"
        # a removed expert's series go (each name kept ~40 forever), the others' stay; the
        # stream's own, logged as it ended after the removal, went too (they came back)
        scraped = httpx.get(gw.url + "/metrics").text
        assert 'expert="law"' not in scraped
        assert f'ir3de_requests_total{{expert="{other}",status="200"}}' in scraped
        r = httpx.delete(gw.url + "/admin/experts/math", headers=_admin())
        assert r.status_code == 400 and "it is the fallback expert" in r.json()["error"][
            "message"]  # the fallback stays
        httpx.post(gw.url + "/admin/experts", headers=_admin(),
                   data={"url": upstreams["law"].url + "/v1", "name": "legal"},
                   files={"stats": ("law.stats", law)}).raise_for_status()

        for fields, files, message in (
                ({"name": "ir3de"}, {}, "the gateway's own name"),
                ({"name": " x"}, {}, "invalid expert name"),
                ({"url": "http://"}, {}, "url names no host"),
                ({}, {"timeout": ("t", b"5")}, "'timeout' as text fields"),
                ({"name": "other"}, {"stats": ("law.stats", b"junk")},
                 "the uploaded stats file 'law.stats'")):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1", **fields},
                           files={"stats": ("law.stats", law), **files})
            assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
        r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), content=b'{"k": "\xff"}')
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        # model names like org/model can be added and removed by name (statistics of
        # their own: the router refuses a copy of legal's)
        org = tmp_path / "org.stats"
        compute_stats(emb, [LEGAL, "The tenant sued the landlord for the deposit."],
                      domain="org").save(org)
        r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                       data={"url": upstreams["law"].url + "/v1", "name": "org/law"},
                       files={"stats": ("org.stats", org.read_bytes())})
        assert r.status_code == 200, r.text
        assert httpx.delete(gw.url + "/admin/experts/org/law", headers=_admin()
                            ).status_code == 200
    finally:
        gw.stop()
    gw = _gateway(config)  # a restart comes back with the persisted state
    try:
        listed = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
        assert [e["name"] for e in listed["experts"]] == ["math", "coding", "legal"]
        assert listed["k"] == 7 and listed["selector"] == "topk"
        assert httpx.post(gw.url + "/v1/chat/completions", json=_chat(LEGAL)
                          ).headers["x-ir3de-expert"] == "legal"
    finally:
        gw.stop()


def test_admin_changes_move_the_default_spelling_back_off_with_the_prompt_counts(
        stats_files, upstreams, tmp_path, data_dir: Path, emb: Embedder) -> None:
    """Experts of 30 prompts each: the default's spelling back-off is the prior; an expert
    of 300 added through the admin API lifts the mean over 100 while the smallest stays at
    30, so the back-off is off, as in a router built from the three; removing it brings the
    prior back. GET /admin/experts and PATCH /admin/settings tell the form in use."""
    small = {}
    for domain, rel in (("math", "reasoning/gsm8k/train.jsonl"),
                        ("coding", "reasoning/mbpp/train.jsonl")):
        texts = [r["text"] for r in read_jsonl(data_dir / rel)][:30]
        small[domain] = tmp_path / f"{domain}-30.stats"
        compute_stats(emb, texts, domain=domain).save(small[domain])
    gw = _gateway(_config(tmp_path, small, upstreams))
    try:
        def smoothing() -> dict:
            return httpx.get(gw.url + "/admin/experts", headers=_admin()).json()["smoothing"]

        prior = {"alpha": 0.01, "pairs": 3e4, "skips": None, "unseen": "score",
                 "spelling": None, "spelling_prior": 100.0}
        assert smoothing() == prior
        assert httpx.post(gw.url + "/v1/chat/completions",
                          json=_chat(CODE)).headers["x-ir3de-expert"] == "coding"
        added = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1"},
                           files={"stats": ("law.stats", stats_files["law"].read_bytes())})
        assert added.status_code == 200, added.text
        assert smoothing() == {**prior, "spelling_prior": None}
        three = Router(emb).fit_stats([DomainStats.load(f) for f in (
            *small.values(), stats_files["law"])])
        assert three.smoothing.spelling_prior is None and three.smoothing.spelling is None
        assert httpx.delete(gw.url + "/admin/experts/law",
                            headers=_admin()).status_code == 200
        assert smoothing() == prior
        # the added term asked for by name is kept whatever the counts
        s = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"spelling": 0.25})
        assert s.status_code == 200 and s.json()["smoothing"] == {
            **prior, "spelling": 0.25, "spelling_prior": None}
    finally:
        gw.stop()


def test_admin_api_shows_no_url_password_nor_temporary_path(stats_files, upstreams, tmp_path,
                                                           data_dir: Path,
                                                           emb: Embedder) -> None:
    """GET /admin/experts showed an expert URL's user:password (the log lines did not);
    POST /admin/experts errors named the server's temporary copy of the upload."""
    config = _with_experts(_config(tmp_path, stats_files, upstreams), coding={
        "url": upstreams["coding"].url.replace("//", "//user:pa55word@") + "/v1"})
    capped = tmp_path / "capped.stats"
    texts = [r["text"] for r in read_jsonl(data_dir / "domains/legalbench/train.jsonl")][:50]
    compute_stats(emb, texts, domain="capped", max_tokens=64).save(capped)
    gw = _gateway(config)
    try:
        r = httpx.get(gw.url + "/admin/experts", headers=_admin())
        assert "pa55word" not in r.text and "user" not in r.text
        assert _experts(gw)["coding"]["url"] == upstreams["coding"].url + "/v1"
        for filename, content, message in (
                ("my law.stats", b"junk", "the uploaded stats file 'my law.stats': not a "
                                          "readable safetensors file"),
                ("copy.stats", stats_files["math"].read_bytes(),
                 "identical statistics: the new expert 'copy' holds exactly the counts"),
                ("capped.stats", capped.read_bytes(),
                 # named as the expert it would become, not by the domain it was counted as
                 "but the uploaded stats file 'capped.stats' (copy) at 64")):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1", "name": "copy"},
                           files={"stats": (filename, content)})
            error = r.json()["error"]["message"]
            assert r.status_code == 400 and message in error, error
            # (tempfile.TemporaryDirectory's folders are named tmp*)
            assert "upload.stats" not in error, error
            assert os.path.join(tempfile.gettempdir(), "tmp") not in error, error
    finally:
        gw.stop()


def test_low_coverage_goes_to_the_fallback(stats_files, upstreams, tmp_path,
                                          emb: Embedder) -> None:
    """min_coverage: a prompt whose token pairs the math and coding statistics mostly lack
    (a legal question) goes to the fallback; the header reports the router's coverage."""
    router = Router(emb).fit_stats([DomainStats.load(stats_files[d]) for d in ("math",
                                                                              "coding")])
    code, legal = router.route(CODE), router.route(LEGAL)
    assert legal.coverage < code.coverage
    cut = (legal.coverage + code.coverage) / 2
    config = _config(tmp_path, stats_files, upstreams, fallback="coding", min_coverage=cut)
    gw = _gateway(config)
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE))
        assert r.headers["x-ir3de-expert"] == r.headers["x-ir3de-routed-to"] == "coding"
        assert r.headers["x-ir3de-coverage"] == f"{code.coverage:.4f}"
        assert "x-ir3de-fallback" not in r.headers
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(LEGAL))
        assert r.headers["x-ir3de-coverage"] == f"{legal.coverage:.4f}"
        assert r.headers["x-ir3de-expert"] == "coding"
        # the router's own pick and confidence stay visible: the fallback says why
        assert (r.headers["x-ir3de-routed-to"], r.headers["x-ir3de-fallback"],
                r.headers["x-ir3de-confidence"]) == (legal.expert, "low_coverage",
                                                     f"{legal.confidence:.4f}")
        assert 'ir3de_fallbacks_total{reason="low_coverage"} 1.0' in httpx.get(
            gw.url + "/metrics").text
        for bad, message in (({"min_coverage": 1.5}, "min_coverage must be a number in [0, 1]"),
                             ({"min_coverage": "x"}, "min_coverage must be a number"),
                             ({"selector": "avg"}, "min_coverage needs a router whose")):
            r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json=bad)
            assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
        r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"min_coverage": 0})
        assert r.status_code == 200 and r.json()["min_coverage"] == 0.0
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(LEGAL))
        assert r.headers["x-ir3de-expert"] == legal.expert
        r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"min_coverage": 0.25})
        assert r.status_code == 200
    finally:
        gw.stop()
    gw = _gateway(config)  # a restart comes back with the persisted cut, not the config's
    try:
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json()[
            "min_coverage"] == 0.25
    finally:
        gw.stop()


def test_admin_removes_endpoints_and_keeps_state_it_cannot_save(stats_files, upstreams,
                                                                tmp_path) -> None:
    spare = {"url": upstreams["law"].url + "/v1"}  # an endpoint the router does not route to
    config = _config(tmp_path, stats_files, upstreams)
    data = yaml.safe_load(config.read_text())
    data["experts"]["spare"] = spare
    config.write_text(yaml.safe_dump(data))
    gw = _gateway(config)
    try:
        # Adding an expert under a name in use is a 409 Conflict, whether the router
        # routes to it (coding) or not (spare, whose URL it silently replaced).
        for name in ("spare", "coding"):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["math"].url + "/v1", "name": name},
                           files={"stats": ("law.stats", stats_files["law"].read_bytes())})
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "expert_exists"
            assert f"expert {name!r} already exists" in r.json()["error"]["message"]
        assert _experts(gw)["spare"]["url"] == spare["url"]
        r = httpx.delete(gw.url + "/admin/experts/spare", headers=_admin())
        assert r.status_code == 200, r.text
        assert sorted(e["name"] for e in r.json()["experts"]) == ["coding", "math"]
        # a change that cannot be persisted is not applied either
        saved = tmp_path / "state" / "router.safetensors"
        saved.unlink()  # written by the removal above
        saved.mkdir()
        before = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
        r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"alpha": 0.5})
        assert r.status_code == 500 and "was not applied" in r.json()["error"]["message"]
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json() == before
    finally:
        gw.stop()


def test_a_state_dir_serves_one_gateway(stats_files, upstreams, tmp_path, capsys) -> None:
    """Two gateways on one state_dir each saved over the other's admin changes (a restart
    kept the last writer's alone); a read-only one was found at the first change."""
    from ir3de.cli import main

    config = _config(tmp_path, stats_files, upstreams)
    gw = _gateway(config)
    try:
        assert main(["serve", "--config", str(config), "--port", str(_free_port())]) == 1
        assert capsys.readouterr().err == (
            f"ir3de: error: state_dir {tmp_path / 'state'} is in use by another process "
            "(another gateway?): two would save over each other's changes; give each its "
            "own state_dir\n")
        assert httpx.get(gw.url + "/healthz").status_code == 200  # the first serves on
    finally:
        gw.stop()
    if os.geteuid() != 0:  # (root writes anywhere)
        (tmp_path / "ro").mkdir(mode=0o555)
        config = _config(tmp_path, stats_files, upstreams, state_dir=str(tmp_path / "ro"))
        assert main(["serve", "--config", str(config), "--port", str(_free_port())]) == 1
        assert "state_dir" in capsys.readouterr().err


def test_a_change_half_saved_leaves_the_previous_state(stats_files, upstreams, tmp_path,
                                                       monkeypatch) -> None:
    """The router file was saved, then experts.json failed: the change answered 500 "not
    applied", but the folder held the new router beside the old endpoints, and a restart
    failed ("router experts ['law'] have no endpoint")."""
    from starlette.testclient import TestClient

    import ir3de.store
    from ir3de.serve import create_app, load_config

    monkeypatch.setenv("IR3DE_ADMIN_TOKEN", TOKEN)
    config = _config(tmp_path, stats_files, upstreams)
    state = tmp_path / "state"
    write = ir3de.store.atomic_write_text

    def failing(path, text, **_) -> None:
        raise OSError(28, "No space left on device")

    def add_law(client: TestClient) -> httpx.Response:
        return client.post("/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1"},
                           files={"stats": ("law.stats", stats_files["law"].read_bytes())})

    with TestClient(create_app(load_config(config))) as client:
        # the first save (nothing on disk yet), then one over a saved state
        monkeypatch.setattr(ir3de.store, "atomic_write_text", failing)
        r = add_law(client)
        assert r.status_code == 500 and "was not applied" in r.json()["error"]["message"]
        assert not (state / "router.safetensors").exists()
        monkeypatch.setattr(ir3de.store, "atomic_write_text", write)
        r = client.patch("/admin/settings", headers=_admin(), json={"threshold": 0.25})
        assert r.status_code == 200, r.text
        saved = {p.name: p.read_bytes() for p in state.iterdir()}
        monkeypatch.setattr(ir3de.store, "atomic_write_text", failing)
        r = add_law(client)
        assert r.status_code == 500 and "was not applied" in r.json()["error"]["message"]
        monkeypatch.setattr(ir3de.store, "atomic_write_text", write)
    assert {p.name: p.read_bytes() for p in state.iterdir()} == saved
    with TestClient(create_app(load_config(config))) as client:  # restarts on it
        listed = client.get("/admin/experts", headers=_admin()).json()
        assert [e["name"] for e in listed["experts"]] == ["math", "coding"]
        assert listed["threshold"] == 0.25
        r = add_law(client)  # and saves a whole change again
        assert r.status_code == 200, r.text
    with TestClient(create_app(load_config(config))) as client:
        listed = client.get("/admin/experts", headers=_admin()).json()
        assert [e["name"] for e in listed["experts"]] == ["math", "coding", "law"]
    assert sorted(p.name for p in state.iterdir()) == ["experts.json", "router.safetensors"]
    # private to the gateway's user: endpoints may hold credentials in their URLs, which
    # experts.json kept world-readable (0644 in a 0755 folder)
    assert (state.stat().st_mode & 0o777, (state / "experts.json").stat().st_mode & 0o777) \
        == (0o700, 0o600)
    # a folder an earlier ir3de wrote (or made by hand) is made private at the start, not
    # at the next admin change
    state.chmod(0o755)
    (state / "experts.json").chmod(0o644)
    with TestClient(create_app(load_config(config))):
        pass
    assert (state.stat().st_mode & 0o777, (state / "experts.json").stat().st_mode & 0o777) \
        == (0o700, 0o600)


def test_a_change_cut_by_a_crash_is_undone_at_restart(stats_files, upstreams, tmp_path,
                                                       monkeypatch, emb: Embedder) -> None:
    """A crash (kill -9) between a change's two writes leaves the new router beside the
    endpoints of the old state: experts.json records the digest of its router file, so a
    restart brings the previous router back instead of failing or serving a mix. A first
    change cut that way (a router file and no experts.json) starts from the config."""
    from starlette.testclient import TestClient

    from ir3de.errors import IR3DEError
    from ir3de.serve import create_app, load_config

    monkeypatch.setenv("IR3DE_ADMIN_TOKEN", TOKEN)
    config = _config(tmp_path, stats_files, upstreams)
    state = tmp_path / "state"
    with TestClient(create_app(load_config(config))) as client:
        r = client.patch("/admin/settings", headers=_admin(), json={"threshold": 0.25})
        assert r.status_code == 200, r.text
    saved = {p.name: p.read_bytes() for p in state.iterdir()}
    # the crash: the router of a change (law added) renamed in, the old one kept aside
    router = state / "router.safetensors"
    router.rename(state / "router.safetensors.previous")
    Router(emb).fit_stats([DomainStats.load(stats_files[d]) for d in ("math", "coding", "law")]
                          ).save(router)
    with TestClient(create_app(load_config(config))) as client:
        listed = client.get("/admin/experts", headers=_admin()).json()
        assert [e["name"] for e in listed["experts"]] == ["math", "coding"]
        assert listed["threshold"] == 0.25
    assert {p.name: p.read_bytes() for p in state.iterdir()} == saved
    # a router file that matches neither is named, not served
    Router(emb).fit_stats([DomainStats.load(stats_files[d]) for d in ("math", "law")]
                          ).save(router)
    with pytest.raises(IR3DEError, match=r"router\.safetensors is not the router .*experts"
                                         r"\.json was saved with"):
        create_app(load_config(config))
    # endpoints and settings without their router: named (the config was served, and the
    # next admin change wrote over every saved one)
    aside = router.read_bytes()
    router.unlink()
    with pytest.raises(IR3DEError, match=r"experts\.json is saved with the router file "
                                         r".*router\.safetensors, which is missing; put it "
                                         r"back, or move .*state away"):
        create_app(load_config(config))
    router.mkdir()
    with pytest.raises(IR3DEError, match=r"router\.safetensors, which is a directory"):
        create_app(load_config(config))
    router.rmdir()
    router.write_bytes(aside)
    experts = json.loads((state / "experts.json").read_text())
    (state / "experts.json").write_text(json.dumps({**experts, "router_sha256": 5}))
    with pytest.raises(IR3DEError, match=r"experts\.json: router_sha256 is 5, not a SHA-256"):
        create_app(load_config(config))
    # a first change cut short: no experts.json yet (and after a second one, a .previous)
    (state / "experts.json").unlink()
    for _ in range(2):
        with TestClient(create_app(load_config(config))) as client:
            listed = client.get("/admin/experts", headers=_admin()).json()
            assert [e["name"] for e in listed["experts"]] == ["math", "coding"]
            assert listed["threshold"] == 0.0  # the config's
        (state / "router.safetensors.previous").write_bytes(router.read_bytes())


def test_state_dir_that_is_a_file_is_refused(stats_files, upstreams, tmp_path,
                                            capsys) -> None:
    (tmp_path / "state").write_text("not a folder")
    assert main(["serve", "--config", str(_config(tmp_path, stats_files, upstreams))]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err


def test_corrupt_saved_state_is_named(stats_files, upstreams, tmp_path, emb: Embedder,
                                      capsys) -> None:
    state = tmp_path / "state"
    state.mkdir()
    Router(emb).fit_stats([DomainStats.load(stats_files[d]) for d in ("math", "coding")]
                          ).save(state / "router.safetensors")
    for saved in ("{bad", "[]", '{"experts": {}}'):
        (state / "experts.json").write_text(saved)
        assert main(["serve", "--config", str(_config(tmp_path, stats_files, upstreams))]) == 1
        err = capsys.readouterr().err
        assert err.startswith("ir3de: error:") and "experts.json" in err, err


def test_admin_refuses_non_finite_timeouts(stats_files, upstreams, tmp_path) -> None:
    """POST /admin/experts with timeout=inf was accepted and saved to experts.json as
    Infinity (not JSON); nan and junk were 400s whose param did not name the field."""
    gw = _gateway(_config(tmp_path, stats_files, upstreams))
    saved = tmp_path / "state" / "experts.json"
    law = stats_files["law"].read_bytes()
    try:
        listed = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
        for timeout, message in (("inf", "Input should be a finite number"),
                                 ("-inf", "Input should be a finite number"),
                                 ("nan", "Input should be a finite number"),
                                 ("1e400", "Input should be a finite number"),
                                 ("0", "Input should be greater than 0"),
                                 ("-3", "Input should be greater than 0"),
                                 ("soon", "Input should be a valid number")):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1", "timeout": timeout},
                           files={"stats": ("law.stats", law)})
            assert r.status_code == 400, (timeout, r.text)
            error = r.json()["error"]
            assert error["message"].startswith(f"invalid expert endpoint: timeout: {message}")
            assert error["param"] == "timeout" and error["type"] == "invalid_request_error"
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json() == listed
        assert not saved.exists()  # nothing was changed, so nothing was saved
        r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                       data={"url": upstreams["law"].url + "/v1", "timeout": "2.5"},
                       files={"stats": ("law.stats", law)})
        assert r.status_code == 200, r.text

        def strict(name: str) -> None:
            raise AssertionError(f"{name} in experts.json")

        state = json.loads(saved.read_text(), parse_constant=strict)
        assert state["experts"]["law"]["timeout"] == 2.5
    finally:
        gw.stop()


def test_admin_delete_of_unknown_expert_is_404(stats_files, upstreams, tmp_path) -> None:
    """DELETE /admin/experts/NAME of an expert that does not exist was a 400; the real
    refusals (the fallback, the router's last expert) stay 400s."""
    gw = _gateway(_config(tmp_path, stats_files, upstreams, fallback=None))
    try:
        listed = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
        for name in ("nobody", "org/nobody"):
            r = httpx.delete(gw.url + f"/admin/experts/{name}", headers=_admin())
            assert r.status_code == 404, r.text
            assert r.json()["error"] == {
                "message": f"unknown expert {name!r}; experts are: math, coding",
                "type": "invalid_request_error", "param": None, "code": "expert_not_found"}
        # Without a fallback a cut would be accepted, saved, and do nothing: refused, as
        # in the config.
        for cuts in ({"threshold": 0.5, "min_coverage": 0.5}, {"threshold": 0.5},
                     {"min_coverage": 0.1}):
            r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json=cuts)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["message"] == \
                f"{next(iter(cuts))} sends prompts to the fallback expert, and this gateway " \
                "has none: set fallback in the config first"
        # An unknown key is named (it was "send a JSON object with some of [...]").
        allowed = ("['alpha', 'k', 'lam', 'min_coverage', 'pairs', 'selector', 'skips', "
                   "'spelling', 'spelling_prior', 'threshold', 'unseen']")
        for changes, message, param in (
                ({"bogus": 1}, f"unknown setting 'bogus'; send a JSON object with some of "
                               f"{allowed}", "bogus"),
                ({"alpha": 0.5, "bogus": 1, "nope": 2}, "unknown settings 'bogus', 'nope'; ",
                 None)):
            r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json=changes)
            assert r.status_code == 400 and r.json()["error"]["message"].startswith(message)
            assert r.json()["error"]["param"] == param
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json() == listed
        assert not list((tmp_path / "state").iterdir())  # nothing changed, nothing saved
        assert httpx.delete(gw.url + "/admin/experts/coding", headers=_admin()
                            ).status_code == 200
        r = httpx.delete(gw.url + "/admin/experts/math", headers=_admin())  # the last one
        assert r.status_code == 400 and r.json()["error"]["message"] == \
            "cannot remove 'math': it is the router's only expert", r.text
        r = httpx.delete(gw.url + "/admin/experts/coding", headers=_admin())  # gone now
        assert r.status_code == 404 and r.json()["error"]["code"] == "expert_not_found"
        assert httpx.delete(gw.url + "/admin/experts/nobody").status_code == 401  # no token
    finally:
        gw.stop()


def test_admin_api_is_off_without_a_token(stats_files, upstreams, tmp_path) -> None:
    gw = _gateway(_config(tmp_path, stats_files, upstreams), token=None)
    try:
        r = httpx.get(gw.url + "/admin/experts", headers=_admin())
        assert r.status_code == 404 and r.json()["error"]["code"] == "admin_disabled"
    finally:
        gw.stop()


@pytest.mark.parametrize(("config", "message"), [
    ({"router": {"stats": ["x.stats"]}}, "experts: Field required"),
    ({"router": {}, "experts": {"a": {"url": "http://x"}}}, "exactly one of router.path"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "ftp://x"}}}, "must start with http"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "fallback": "b"},
     "fallback 'b' is not one of the experts"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "threshold": 2},
     "threshold"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "min_coverage": 0.5},
     "min_coverage sends prompts to the fallback expert: set fallback too"),
    # accepted, it did nothing
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "threshold": 0.99},
     "threshold sends prompts to the fallback expert: set fallback too"),
    ({"router": {"path": "missing.safetensors"}, "experts": {"a": {"url": "http://x"}}},
     "missing.safetensors"),
    ({"router": {"stats": []}, "experts": {"a": {"url": "http://x"}}}, "router.stats"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://"}}}, "url names no host"),
    # accepted, then every request to the expert was a text/plain 500 and a traceback
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://127.0.0.1:99999/v1"}}},
     "experts.a.url: url has an invalid port (Port out of range 0-65535); a "
     "port is a number from 1 to 65535"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://127.0.0.1:abc/v1"}}},
     "experts.a.url: url has an invalid port (Port could not be cast to "
     "integer value as 'abc')"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://127.0.0.1:0/v1"}}},
     "experts.a.url: url has an invalid port (0); a port is a number from 1 "
     "to 65535"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://[::1]x/v1"}}},
     "experts.a.url: url is not one httpx can send to (Invalid port: 'x')"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://127.0.0.1:8000/v1 "}}},
     "experts.a.url: url must not start or end with whitespace, got "
     "'http://127.0.0.1:8000/v1 '"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": " http://127.0.0.1:8000/v1"}}},
     "url must not start or end with whitespace"),
    # names no client could send as its model, or not reliably
    ({"router": {"path": "r"}, "experts": {"": {"url": "http://x"}}},
     "expert name '' must be non-empty, without surrounding whitespace"),
    ({"router": {"path": "r"}, "experts": {" a": {"url": "http://x"}}},
     "expert name ' a' must be non-empty, without surrounding whitespace"),
    ({"name": "", "router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}},
     "name: the gateway's name '' must be non-empty, without surrounding "
     "whitespace"),
    # what follows # was never sent; the API path went after it
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x/v1#frag"}}},
     "experts.a.url: url must not hold a fragment ('#...')"),
    # a name the admin API could not remove (no route matches a newline)
    ({"router": {"path": "r"}, "experts": {"a\nb": {"url": "http://x"}}},
     "expert name 'a\\nb' holds a control character (U+000A)"),
    # the gateway's own secrets never go to an expert
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x", "api_key_env": "K"}},
      "api_keys_env": "K"},
     "experts.a.api_key_env: K is the gateway's own api_keys_env, which is never sent"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}},
      "admin_key_envs": ["A", "IR3DE_ADMIN_TOKEN"]},
     "admin_key_envs[1]: IR3DE_ADMIN_TOKEN is the gateway's own admin_token_env"),
    # an infinite timeout was accepted (and saved to experts.json as Infinity, not JSON)
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x", "timeout": float("inf")}}},
     "experts.a.timeout: Input should be a finite number"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x", "timeout": float("nan")}}},
     "experts.a.timeout: Input should be a finite number"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x", "timeout": 0}}},
     "experts.a.timeout: Input should be greater than 0"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "api_keys_env": ""},
     "api_keys_env: String should have at least 1 character"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "fallback_statuses": [404]},
     "fallback_statuses: 404 is not a status that says the expert is down or "
     "overloaded: give 429 or statuses from 500 to 599"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "fallback_statuses": 503},
     "fallback_statuses: Input should be a valid list"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}},
      "fallback_statuses": [True]}, "fallback_statuses.0: Input should be a valid integer"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "cooldown_failures": -1},
     "cooldown_failures: Input should be greater than or equal to 0"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "cooldown_failures": 2.5},
     "cooldown_failures: Input should be a valid integer"),
    # YAML's yes/true: not quietly 1 failure
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "cooldown_failures": True},
     "cooldown_failures: Input should be a valid integer"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "cooldown_seconds": 0},
     "cooldown_seconds: Input should be greater than 0"),
    # a browser's Origin has no path: this entry would never match, silently
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}},
      "cors_origins": ["https://chat.example.com/"]},
     "cors_origins: 'https://chat.example.com/' is not an origin: "
     "scheme://host[:port], without a path or trailing slash"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}},
      "cors_origins": ["chat.example.com"]}, "'chat.example.com' is not an origin"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}},
      "cooldown_seconds": float("inf")}, "cooldown_seconds: Input should be a finite number"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "cooldown_seconds": "1"},
     "cooldown_seconds: Input should be a valid number"),
    # a count written as a float is taken only when it is a whole number
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "max_connections": 1.5},
     "max_connections: Input should be a valid integer"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "max_body_bytes": True},
     "max_body_bytes: Input should be a valid integer"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}}, "max_answer_bytes": 0},
     "max_answer_bytes: Input should be greater than 0"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x"}},
      "max_admin_body_bytes": 1.5}, "max_admin_body_bytes: Input should be a valid integer"),
    # httpx sent the url's credentials as Basic authorization instead of the key
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://u:p@x/v1",
                                                 "api_key_env": "K"}}},
     "experts.a.api_key_env: the url holds credentials (user:password@), which "
     "httpx sends as Basic authorization in place of api_key_env's Bearer key: give one or "
     "the other"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://u@x/v1", "api_key_env": "K"}}},
     "experts.a.api_key_env: the url holds credentials"),
    # the header of an Azure-style key
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x", "api_key_header": "k"}}},
     "experts.a.api_key_header: api_key_header names the header of "
     "api_key_env's key: set api_key_env too"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x", "api_key_env": "K",
                                                 "api_key_header": "api key"}}},
     "api_key_header must be an HTTP header name, got 'api key'"),
    ({"router": {"path": "r"}, "experts": {"a": {"url": "http://x", "api_key_env": "K",
                                                 "api_key_header": "Content-Type"}}},
     "api_key_header must not be 'Content-Type', which the gateway sets itself"),
    # router settings: checked with the preset before any file is read
    ({"router": {"stats": ["x.stats"], "settings": {"pairs": "1e4", "alpah": 1}},
      "experts": {"a": {"url": "http://x"}}},
     "router.settings.alpah: Extra inputs are not permitted"),
    ({"router": {"stats": ["x.stats"], "settings": {"k": 5}}, "experts": {"a": {"url": "x"}}},
     "router.settings.k applies to selector topk only; preset 'default' gives selector geo"),
    ({"router": {"stats": ["x.stats"], "preset": "paper", "settings": {"alpha": 0.1}},
      "experts": {"a": {"url": "http://x"}}},
     "router.settings.alpha applies to model nb only; preset 'paper' gives model ridge"),
    ({"router": {"stats": ["x.stats"], "settings": {"pairs": "-1"}},
      "experts": {"a": {"url": "http://x"}}},
     "invalid config: router.settings (over preset 'default'): the pair Dirichlet mass must "
     "be a finite number > 0, 'auto' or None, got -1.0"),
    # both spelling forms: named as the config's field, not the library's argument alone
    ({"router": {"stats": ["x.stats"], "settings": {"spelling": 0.5, "spelling_prior": 100}},
      "experts": {"a": {"url": "http://x"}}},
     "invalid config: router.settings (over preset 'default'): the spelling back-off enters "
     "once: as an added term (spelling=0.5) or as a prior (spelling_prior=100.0)"),
    ({"router": {"stats": ["x.stats"], "settings": {"k": True, "selector": "topk"}},
      "experts": {"a": {"url": "http://x"}}}, "router.settings.k: Input should be a valid "
                                              "integer"),
    ({"router": {"stats": ["x.stats"], "preset": "paper", "settings": {"model": "nb",
                                                                       "balance": True}},
      "experts": {"a": {"url": "http://x"}}},
     "router.settings.balance applies to model ridge only; router.settings gives model nb"),
    ({"router": {"stats": ["x.stats"], "preset": "fast"}, "experts": {"a": {"url": "x"}}},
     "invalid config: router.preset: unknown preset 'fast'; choose one of"),
    # read nowhere: a saved router keeps its own settings
    ({"router": {"path": "r", "preset": "unigram"}, "experts": {"a": {"url": "http://x"}}},
     "invalid config: router.preset applies to router.stats only; a saved router "
     "(router.path) keeps the "
     "settings it was built with, and router.settings changes them"),
])
def test_bad_config_exits_1_with_the_field(config: dict, message: str, tmp_path: Path,
                                           capsys) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["serve", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("ir3de: error:") and message in err, err


def test_config_paths_are_relative_to_the_file_and_tilde_is_home(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """`path: ~/router.safetensors` was read as a folder named "~" beside gateway.yaml."""
    pytest.importorskip("pydantic")
    from ir3de.serve import load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(yaml.safe_dump({
        "router": {"stats": ["~/math.stats", "stats/coding.stats"]},
        "experts": {"math": {"url": "http://127.0.0.1:1/v1"}},
        "state_dir": "~/state", "trust": "./~/keys"}))
    config = load_config(folder / "gateway.yaml")
    assert config.router.stats == [str(tmp_path / "home" / "math.stats"),
                                   str(folder / "stats" / "coding.stats")]
    assert (config.state_dir, config.trust) == (str(tmp_path / "home" / "state"),
                                                str(folder / "~" / "keys"))


def test_infinite_timeout_in_saved_state_is_refused(stats_files, upstreams, tmp_path,
                                                   emb: Embedder) -> None:
    """A state folder whose experts.json holds "timeout": Infinity (which the admin API
    wrote for timeout=inf) is refused by name, not served with a timeout that never ends."""
    from ir3de.errors import IR3DEError
    from ir3de.serve import _initial_state, load_config

    state = tmp_path / "state"
    state.mkdir()
    Router(emb).fit_stats([DomainStats.load(stats_files[d]) for d in ("math", "coding")]
                          ).save(state / "router.safetensors")
    experts = {"math": {"url": upstreams["math"].url + "/v1", "timeout": "Infinity"},
               "coding": {"url": upstreams["coding"].url + "/v1"}}
    (state / "experts.json").write_text(json.dumps({"experts": experts, "threshold": 0.0}
                                                   ).replace('"Infinity"', "Infinity"))
    config = load_config(_config(tmp_path, stats_files, upstreams))
    with pytest.raises(IR3DEError, match=r"experts\.json: .*timeout: Input should be a "
                                         r"finite number"):
        _initial_state(config)


KEYS_ENV = "IR3DE_TEST_CLIENT_KEYS"


@pytest.mark.parametrize(("value", "message"), [
    (None, f"api_keys_env: the environment variable {KEYS_ENV} is not set"),
    ("", f"api_keys_env: the environment variable {KEYS_ENV} is empty"),
    ("  ", f"api_keys_env: the environment variable {KEYS_ENV} is empty"),
    ("k1,,k2", f"api_keys_env: key 2 of 3 in {KEYS_ENV} is empty"),
    ("k1, ", f"api_keys_env: key 2 of 2 in {KEYS_ENV} is empty"),
    ("k1,my key", f"api_keys_env: key 2 of 2 in {KEYS_ENV} holds a space"),
    ("k1,cl\u00e9", f"api_keys_env: key 2 of 2 in {KEYS_ENV} holds a space or a character "
                    "outside printable ASCII"),
])
def test_api_keys_env_without_usable_keys_refuses_to_start(
        value: str | None, message: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """A gateway its operator meant to protect must not start open: an unset or empty
    variable, or an empty key, stops it with a config error (before the router loads:
    this router file does not exist). The message never shows the keys."""
    if value is None:
        monkeypatch.delenv(KEYS_ENV, raising=False)
    else:
        monkeypatch.setenv(KEYS_ENV, value)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"router": {"path": "missing.safetensors"},
                                    "experts": {"a": {"url": "http://127.0.0.1:9/v1"}},
                                    "api_keys_env": KEYS_ENV}))
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ir3de: error:") and message in err, err
    assert "k1" not in err and "my key" not in err


def test_router_expert_without_endpoint_is_refused(stats_files, tmp_path, capsys) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"router": {"stats": [str(stats_files["math"]),
                                                         str(stats_files["coding"])]},
                                    "experts": {"math": {"url": "http://127.0.0.1:9/v1"}}}))
    assert main(["serve", "--config", str(path)]) == 1
    assert "router experts ['coding'] have no endpoint" in capsys.readouterr().err


def test_huge_chunked_body_without_length_is_refused(gateway: Proc) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "ir3de", "messages": [{"role": "user", "content": "'
        yield b"x" * 30_000
        yield b'"}]}'

    r = httpx.post(gateway.url + "/v1/chat/completions", content=body(),
                   headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def _raw_request(gateway: Proc, head: bytes, body: bytes) -> socket.socket:
    """A socket to the gateway that has sent ``head`` (the request line and headers, without
    the blank line) and the start of ``body``, and nothing more."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    sock.sendall(head + b"\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\r\n"
                 + body)
    return sock


def test_client_gone_mid_upload_is_logged_as_499(gateway: Proc) -> None:
    """request.body() raised ClientDisconnect: an ASGI traceback in the log and no
    access-log line."""
    before = len(_access_log(gateway))
    sock = _raw_request(gateway, b"POST /v1/chat/completions HTTP/1.1\r\n"
                                 b"content-length: 5000", b'{"model": "ir3de", ')
    time.sleep(0.3)
    sock.close()
    assert _wait_for(lambda: len(_access_log(gateway)) > before)
    line = _access_log(gateway)[before]
    assert (line["status"], line["path"]) == (499, "/chat/completions")
    assert "disconnected" in line["error"]
    assert "Traceback" not in os.pread(gateway.log.fileno(), 1 << 22, 0).decode()
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_chunked_body_is_refused_once_past_the_limit(gateway: Proc) -> None:
    """A chunked body was read whole before its size was checked: the 413 came only once
    the client had sent all of it (here never)."""
    part = b'{"model": "ir3de", "messages": [{"role": "user", "content": "' + b"x" * 25_000
    sock = _raw_request(gateway, b"POST /v1/chat/completions HTTP/1.1\r\n"
                                 b"transfer-encoding: chunked",
                        f"{len(part):x}\r\n".encode() + part + b"\r\n")
    with sock:
        answer = b""
        while b"\r\n\r\n" not in answer:  # no rest, no last chunk: the 413 regardless
            data = sock.recv(65536)  # (times out after 5 s, when the gateway waits on)
            assert data, answer
            answer += data
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert _wait_for(lambda: _access_log(gateway)[-1]["status"] == 413)


# ----------------------------------------------------------------- the OpenAI Python SDK
# The gateway driven by the official client, as its users will: what the SDK parses,
# raises and reads from headers is the compatibility that matters.


@pytest.fixture(scope="module")
def sdk(gateway: Proc):
    """An ``openai.OpenAI`` client on the gateway (no retries: each call is one request)."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0,
                           timeout=20)
    yield client
    client.close()


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_sdk_chat_completions_and_routing_headers(sdk) -> None:
    r = sdk.chat.completions.with_raw_response.create(model="ir3de", messages=_user(MATH))
    assert r.headers["x-ir3de-expert"] == "math"
    assert 0 < float(r.headers["x-ir3de-confidence"]) <= 1
    assert 0 <= float(r.headers["x-ir3de-coverage"]) <= 1
    assert r.parse().choices[0].message.content == "answer from math to model qwen-math"
    direct = sdk.chat.completions.with_raw_response.create(model="coding",
                                                           messages=_user(MATH))
    assert direct.headers["x-ir3de-expert"] == "coding"
    assert "x-ir3de-confidence" not in direct.headers
    done = sdk.completions.create(model="ir3de", prompt=CODE)
    assert done.choices[0].text == "answer from coding to model coding"
    # Every parameter reaches the expert unchanged; only "model" becomes the expert's.
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": CODE}, image]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f",
                                                                  "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    params = {"temperature": 0.3, "max_tokens": 17, "stop": ["\n"], "n": 2, "seed": 5,
              "user": "u1", "tools": [tool], "response_format": {"type": "json_object"}}
    r = sdk.chat.completions.with_raw_response.create(
        model="ir3de", messages=messages, extra_body={"top_k": 3, "echo": True}, **params)
    assert r.headers["x-ir3de-expert"] == "coding"  # routed on the text part
    assert r.parse().model_extra["received"] == {"model": "coding", "messages": messages,
                                                 "top_k": 3, "echo": True, **params}


def test_sdk_streams(sdk, upstreams: dict[str, Proc]) -> None:
    stream = sdk.chat.completions.create(model="ir3de", messages=_user(MATH), stream=True,
                                         stream_options={"include_usage": True},
                                         extra_body={"chunks": 2})
    chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks[:-1]] == ["math-0 ", "math-1 "]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 9
    with sdk.completions.with_streaming_response.create(
            model="ir3de", prompt=CODE, stream=True, extra_body={"chunks": 2}) as r:
        assert r.headers["x-ir3de-expert"] == "coding"
        assert [c.choices[0].text for c in r.parse()] == ["coding-0 ", "coding-1 "]
    # A stream the client closes early: the gateway lets go of the upstream's.
    tag = f"sdk-{time.monotonic_ns()}"
    stream = sdk.chat.completions.create(model="math", messages=_user(MATH), stream=True,
                                         extra_body={"chunks": 100, "tag": tag})
    assert next(iter(stream)).choices[0].delta.content == "math-0 "
    stream.close()
    state = upstreams["math"].url + f"/streams/{tag}"
    assert _wait_for(lambda: httpx.get(state).json()["state"] == "disconnected")


def test_sdk_async_client(gateway: Proc) -> None:
    openai = pytest.importorskip("openai")

    async def run() -> tuple:
        async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused",
                                      max_retries=0, timeout=20) as client:
            answer = await client.chat.completions.create(model="ir3de", messages=_user(CODE))
            stream = await client.chat.completions.create(
                model="ir3de", messages=_user(MATH), stream=True, extra_body={"chunks": 2})
            deltas = [c.choices[0].delta.content async for c in stream]
            models = [m.id async for m in client.models.list()]
            return answer.choices[0].message.content, deltas, models

    assert asyncio.run(run()) == ("answer from coding to model coding",
                                  ["math-0 ", "math-1 "], ["ir3de", "math", "coding"])


def test_sdk_models_list_and_retrieve(sdk) -> None:
    """client.models.retrieve() is GET /v1/models/{id}: it was a bare 404 Not Found."""
    openai = pytest.importorskip("openai")
    assert [m.id for m in sdk.models.list()] == ["ir3de", "math", "coding"]
    assert sdk.models.retrieve("math").id == "math"
    assert sdk.models.retrieve("ir3de").owned_by == "ir3de"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"
    assert "model 'gpt-9' does not exist" in caught.value.message


def test_sdk_raises_the_right_error_with_its_message(sdk) -> None:
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.NotFoundError) as caught:  # as OpenAI answers an unknown model
        sdk.chat.completions.create(model="gpt-9", messages=_user(MATH))
    assert "model 'gpt-9' does not exist" in caught.value.message
    assert caught.value.body == {"message": caught.value.body["message"], "param": "model",
                                 "type": "invalid_request_error", "code": "model_not_found"}
    for status, error in ((400, openai.BadRequestError), (404, openai.NotFoundError),
                          (422, openai.UnprocessableEntityError),
                          (500, openai.InternalServerError)):
        for stream in (False, True):  # (a streamed request fails before its first chunk)
            with pytest.raises(error) as caught:
                sdk.chat.completions.create(model="ir3de", messages=_user(MATH),
                                            stream=stream, extra_body={"force_status": status})
            assert caught.value.status_code == status
            assert caught.value.body["message"] == "math refuses"  # the upstream's
            assert "math refuses" in caught.value.message
    with pytest.raises(openai.APIError, match="broke off the stream"):
        list(sdk.chat.completions.create(model="math", messages=_user(MATH), stream=True,
                                         extra_body={"die_after": 1}))


def test_sdk_reads_the_upstream_retry_and_request_id_headers(sdk) -> None:
    """retry-after, x-should-retry and x-request-id reach the client: the SDK times its
    retries by them and reports the request id. They were dropped."""
    openai = pytest.importorskip("openai")
    headers = {"retry-after": "7", "x-should-retry": "false", "x-request-id": "req-1",
               "x-ratelimit-remaining-requests": "0", "alt-svc": 'h3=":443"'}
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="ir3de", messages=_user(MATH),
                                    extra_body={"force_status": 429, "headers": headers})
    relayed = caught.value.response.headers
    assert relayed["x-ir3de-expert"] == "math"
    assert {k: relayed.get(k) for k in headers} == {**headers, "alt-svc": None}
    answer = sdk.chat.completions.create(model="ir3de", messages=_user(MATH),
                                         extra_body={"headers": {"x-request-id": "req-2"}})
    assert answer._request_id == "req-2"


def _logged(proc: Proc, request_id: str) -> dict:
    """The access-log line of the request with this id."""
    lines = [line for line in _request_log(proc) if line["request_id"] == request_id]
    assert len(lines) == 1, lines
    return lines[0]


def test_every_request_has_one_id_in_its_answer_the_log_and_the_upstream(
        gateway: Proc) -> None:
    """The gateway's own errors had no x-request-id, the access line no id, duration or
    size, and an expert's log could not be matched with the gateway's: now one id per
    request, the client's own when a proxy in front set a plain one."""
    r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH, echo=True))
    rid = r.headers["x-ir3de-request-id"]
    assert r.status_code == 200 and rid.startswith("req_") and len(rid) == 36
    assert r.headers["x-request-id"] == rid  # the expert sent none of its own
    assert r.json()["headers"]["x-request-id"] == rid  # what the expert received
    line = _logged(gateway, rid)
    assert line["status"] == 200 and line["complete"] is True and line["expert"] == "math"
    assert line["bytes"] == len(r.content) and line["client"] == "127.0.0.1"
    assert 0 < line["duration_ms"] < 10_000
    # a proxy's id is kept, and goes to the expert made unique (vLLM refuses an id that
    # is already running, and a client's may repeat); one that could break a log line is not
    sent = []
    for _ in range(2):
        r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH, echo=True),
                       headers={"x-request-id": "7f3a-42:edge/1"})
        assert r.headers["x-ir3de-request-id"] == "7f3a-42:edge/1"
        sent.append(r.json()["headers"]["x-request-id"])
        assert re.fullmatch(r"7f3a-42:edge/1-[0-9a-f]{8}", sent[-1]), sent
    assert sent[0] != sent[1]
    assert {line.get("upstream_request_id") for line in _request_log(gateway)
            if line["request_id"] == "7f3a-42:edge/1"} == set(sent)
    for odd in ("a b", "x" * 129, '"}, {"forged": 1'):
        r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH),
                       headers={"x-request-id": odd})
        assert r.headers["x-ir3de-request-id"].startswith("req_"), odd
    # the expert's own id is what the SDK reports; the gateway's stays in its header
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   json=_chat(MATH, headers={"x-request-id": "req-upstream"}))
    assert r.headers["x-request-id"] == "req-upstream"
    assert _logged(gateway, r.headers["x-ir3de-request-id"])["status"] == 200
    # the gateway's own answers (a 404, an unknown route) carry one too
    for r in (httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH, model="x")),
              httpx.get(gateway.url + "/v1/responses")):
        rid = r.headers["x-request-id"]
        assert r.status_code == 404 and r.headers["x-ir3de-request-id"] == rid
        assert _logged(gateway, rid)["status"] == 404
    # a stream: logged as its last byte goes, whole
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      json=_chat(MATH, stream=True, chunks=3)) as r:
        size = len(r.read())
    line = _logged(gateway, r.headers["x-ir3de-request-id"])
    assert (line["bytes"], line["complete"], line["stream"]) == (size, True, True)


def test_head_requests_compressed_bodies_and_trailing_slashes(gateway: Proc) -> None:
    """HEAD /v1/models (an uptime check) was a 405, a gzip request body a 400 about
    invalid UTF-8, and a trailing slash a bare 307 that SDKs do not follow for a POST."""
    for path in ("/v1/models", "/v1/models/math", "/metrics", "/healthz"):
        r = httpx.head(gateway.url + path)
        assert r.status_code == 200 and r.content == b"", path
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   content=gzip.compress(json.dumps(_chat(MATH)).encode()),
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 415
    assert r.json()["error"]["message"] == "request bodies in content-encoding 'gzip' are " \
        "not accepted: send the body uncompressed"
    r = httpx.post(gateway.url + "/v1/chat/completions/", json=_chat(MATH))
    assert r.status_code == 404 and r.json()["error"]["message"].startswith(
        "Invalid URL (POST /v1/chat/completions/): this gateway serves")
    assert r.json()["error"]["message"].endswith("(without a trailing slash)")
    # a model card's path too ("model '' does not exist", "model 'math/' does not exist")
    for path in ("/v1/models/", "/v1/models/math/"):
        r = httpx.get(gateway.url + path)
        assert r.status_code == 404 and r.json()["error"]["message"] == (
            f"Invalid URL (GET {path}): this gateway serves POST /v1/chat/completions, POST "
            "/v1/completions and GET /v1/models (without a trailing slash)"), path


def test_cors_lets_the_named_web_origins_call_the_api(stats_files, upstreams,
                                                      tmp_path) -> None:
    """A chat page on another origin could not call the gateway: its preflight (sent
    without a key) was a 401, and the answers had no CORS headers. Now: the origins in
    cors_origins, with the routing headers readable; never the admin API."""
    config = _config(tmp_path, stats_files, upstreams, api_keys_env=KEYS_ENV,
                     cors_origins=["https://chat.example.com", "http://[::1]:3000"])
    proc = _gateway(config, env={KEYS_ENV: "client-key"})
    try:
        url = proc.url + "/v1/chat/completions"
        page = {"origin": "https://chat.example.com"}
        preflight = {**page, "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization, content-type"}
        r = httpx.options(url, headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        assert "authorization" in r.headers["access-control-allow-headers"]
        # HEAD is served (an uptime check from a page): its preflight was a 400
        r = httpx.options(proc.url + "/v1/models",
                          headers={**preflight, "access-control-request-method": "HEAD"})
        assert r.status_code == 200 and "HEAD" in r.headers["access-control-allow-methods"]
        r = httpx.post(url, json=_chat(MATH),
                       headers={**page, "authorization": "Bearer client-key"})
        assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math"
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
        assert {"x-ir3de-expert", "x-ir3de-routed-to", "x-request-id"} <= exposed
        # the page may read a refusal too
        r = httpx.post(url, json=_chat(MATH), headers=page)
        assert r.status_code == 401 and r.headers["access-control-allow-origin"]
        # another origin gets nothing a browser would accept
        other = {**preflight, "origin": "https://evil.example"}
        assert httpx.options(url, headers=other).status_code == 400
        r = httpx.post(url, json=_chat(MATH), headers={
            "origin": "https://evil.example", "authorization": "Bearer client-key"})
        assert "access-control-allow-origin" not in r.headers
        # the admin API is no web page's business
        r = httpx.options(proc.url + "/admin/experts", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = httpx.get(proc.url + "/admin/experts",
                      headers={**page, **_admin()})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    finally:
        proc.stop()


def test_no_openapi_schema_nor_upstream_account(gateway: Proc) -> None:
    """/openapi.json listed the admin routes to anyone; openai-organization and
    openai-project (the operator's own upstream account) were relayed with the other
    openai-* headers."""
    assert httpx.get(gateway.url + "/openapi.json").status_code == 404
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   json=_chat(MATH, headers={"openai-organization": "org-operator",
                                             "openai-project": "proj_operator",
                                             "openai-processing-ms": "12"}))
    assert r.status_code == 200 and r.headers["openai-processing-ms"] == "12"
    assert "openai-organization" not in r.headers and "openai-project" not in r.headers


def test_admin_token_scheme_any_case_and_utf8_token(stats_files, upstreams, tmp_path,
                                                    monkeypatch, capsys) -> None:
    """The scheme was matched case-sensitively (client keys took any case), and a non-ASCII
    token could never match (header bytes decoded as Latin-1, token encoded as UTF-8). A
    token with a trailing newline (a secret made from a file) locked the admin API without
    a word: no header carries it; it is stripped now, as client keys are. A token ending
    in "à" (UTF-8 C3 A0: Latin-1's no-break space last) or "Å" never matched either."""
    token = "s3cret-ädmin-voilà"
    gw = _gateway(_config(tmp_path, stats_files, upstreams), token=f" {token}\n")
    try:
        for raw in (b"bearer " + token.encode(), b"Bearer\t" + token.encode()):
            r = httpx.get(gw.url + "/admin/experts", headers={"authorization": raw})
            assert r.status_code == 200, raw
        for wrong in (b"Bearer " + token[:-1].encode(), b"Basic " + token.encode(), b"Bearer"):
            r = httpx.get(gw.url + "/admin/experts", headers={"authorization": wrong})
            assert r.status_code == 401, wrong
    finally:
        gw.stop()
    # a space or control character inside: no client could send it, so the gateway stops
    monkeypatch.setenv("IR3DE_ADMIN_TOKEN", "two words")
    assert main(["serve", "--config", str(_config(tmp_path, stats_files, upstreams))]) == 1
    assert capsys.readouterr().err == (
        "ir3de: error: admin_token_env: IR3DE_ADMIN_TOKEN holds a space or a control "
        "character inside the token, which an 'Authorization: Bearer' header cannot carry\n")


def test_sdk_stream_null_is_not_streaming(sdk) -> None:
    """OpenAI's API reads "stream": null (what the SDK sends for stream=None) as not
    streaming; the gateway refused it with 400."""
    answer = sdk.chat.completions.create(model="ir3de", messages=_user(CODE), stream=None)
    assert answer.choices[0].message.content == "answer from coding to model coding"


def test_sdk_token_id_prompts(sdk) -> None:
    """A completions prompt of token ids is valid OpenAI input: routed, it has no text to
    read and goes to the fallback; to an expert by name it is forwarded. Both were 400s."""
    for prompt in ([1, 2, 3], [[1, 2], [3]]):
        r = sdk.completions.with_raw_response.create(model="ir3de", prompt=prompt,
                                                     extra_body={"echo": True})
        assert r.headers["x-ir3de-expert"] == "math"  # the fallback
        assert r.parse().model_extra["received"]["prompt"] == prompt
        r = sdk.completions.with_raw_response.create(model="coding", prompt=prompt,
                                                     extra_body={"echo": True})
        assert r.headers["x-ir3de-expert"] == "coding"
        assert r.parse().model_extra["received"]["prompt"] == prompt


def test_sdk_expert_by_name_is_forwarded_as_is(sdk) -> None:
    """Messages without a user turn, asked of an expert by name: the gateway refused them
    with 400 ("no user message to route on")."""
    system = [{"role": "system", "content": "Say hello."}]
    answer = sdk.chat.completions.create(model="coding", messages=system,
                                         extra_body={"echo": True})
    assert answer.model_extra["received"]["messages"] == system


def test_a_conversation_without_a_user_message_is_routed_on_its_other_messages(
        sdk, stats_files, upstreams, tmp_path) -> None:
    """A system prompt alone (which OpenAI answers) was a 400 "'messages' has no user
    message to route on", and a user message of white space a 400 "the prompt to route is
    empty", though a fallback was configured."""
    for text, expert in ((CODE, "coding"), (MATH, "math")):
        r = sdk.chat.completions.with_raw_response.create(
            model="ir3de", messages=[{"role": "system", "content": text}])
        assert r.headers["x-ir3de-routed-to"] == expert
    for blank in ("", "   \n"):  # nothing to route on: the fallback answers
        r = sdk.chat.completions.with_raw_response.create(model="ir3de", messages=_user(blank))
        assert (r.headers["x-ir3de-expert"], r.headers["x-ir3de-fallback"]) == ("math",
                                                                                 "no_text")
    gw = _gateway(_config(tmp_path, stats_files, upstreams, fallback=None))
    try:  # without a fallback: a 400 that says what to do
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat("   "))
        assert r.status_code == 400 and r.json()["error"]["message"] == (
            "the prompt has no text to route on; name an expert as 'model' or configure a "
            "fallback"), r.text
    finally:
        gw.stop()


def test_sdk_parses_a_gzipped_upstream_stream(sdk) -> None:
    """A gzipped upstream stream reached the client still compressed but without its
    content-encoding: UnicodeDecodeError in the SDK."""
    stream = sdk.chat.completions.create(model="ir3de", messages=_user(MATH), stream=True,
                                         extra_body={"chunks": 2, "gzip": True})
    assert [c.choices[0].delta.content for c in stream] == ["math-0 ", "math-1 "]


def test_sdk_stream_cut_mid_event_raises_api_error(sdk) -> None:
    """An upstream that broke off in the middle of an event left half an event for the
    gateway's error event to run into: JSONDecodeError in the SDK instead of the APIError
    naming the expert."""
    openai = pytest.importorskip("openai")
    deltas = []
    with pytest.raises(openai.APIError, match="expert 'math' broke off the stream"):
        for c in sdk.chat.completions.create(model="math", messages=_user(MATH), stream=True,
                                             extra_body={"die_after": 1, "half_event": True}):
            deltas.append(c.choices[0].delta.content)
    assert deltas == ["math-0 "]


def test_sdk_undecodable_upstream_answer_is_a_502(sdk) -> None:
    """An answer whose body its content-encoding does not describe (here: plain JSON said
    to be gzip) was a traceback and a text/plain 500 "Internal Server Error"; now it is a
    502 in OpenAI's error JSON naming the expert, streamed request or not (a stream's first
    bytes are read before its 200 is relayed)."""
    openai = pytest.importorskip("openai")
    lying = {"headers": {"content-encoding": "gzip"}}
    for extra, stream in ((lying, False), ({**lying, "force_status": 400}, False),
                          ({**lying, "force_status": 400}, True), ({**lying, "chunks": 1}, True)):
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="math", messages=_user(MATH), stream=stream,
                                        extra_body=extra)
        assert caught.value.status_code == 502
        message = "expert 'math' sent an answer its content-encoding does not describe " \
                  "(DecodingError)"
        assert caught.value.body["message"] == message and message in caught.value.message
        assert caught.value.body["type"] == "upstream_error"
    # a stream that turns out undecodable once it has begun ends with an error event
    deltas = []
    with pytest.raises(openai.APIError, match=r"expert 'math' broke off the stream"):
        for c in sdk.chat.completions.create(model="math", messages=_user(MATH), stream=True,
                                             extra_body={"gzip": True, "corrupt_after": 2}):
            deltas.append(c.choices[0].delta.content)
    assert deltas == ["math-0 ", "math-1 "]


def test_an_answer_in_an_encoding_the_gateway_cannot_decode_is_a_final_502(
        gateway: Proc) -> None:
    """httpx passes a content-encoding it does not know (br without brotli, zstd, x-gzip)
    through undecoded: the client got a 200 of compressed bytes without their
    content-encoding. Now a 502, which SDKs are told not to retry."""
    for encoding in ("br", "x-gzip", "gzip, zstd"):
        for model, stream in (("math", False), ("math", True), ("ir3de", True)):
            r = httpx.post(gateway.url + "/v1/chat/completions",
                           json=_chat(MATH, model=model, stream=stream,
                                      headers={"content-encoding": encoding}))
            assert r.status_code == 502, (encoding, stream, r.text)
            unknown = encoding.split(", ")[-1]
            assert r.json()["error"]["message"] == (
                f"expert 'math' answered in content-encoding {unknown!r}, which the gateway "
                "cannot decode (UnknownEncoding)")
            assert r.headers["x-should-retry"] == "false"
            assert "x-ir3de-fallback" not in r.headers  # the expert did answer
    r = httpx.post(gateway.url + "/v1/chat/completions",  # what httpx decodes still goes
                   json=_chat(MATH, model="math", gzip=True))
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert "x-should-retry" not in r.headers


def test_a_stream_ends_at_done(gateway: Proc, upstreams: dict[str, Proc]) -> None:
    """An expert that held its stream open after [DONE] kept a client reading to the end
    waiting for the expert's timeout, and then got an "event: error" after [DONE]. Nothing
    after [DONE] is relayed now; a stream that ends there keeps its connection for reuse.
    The client's body ends at [DONE]: the read for reuse came first, holding it 1 s more."""
    start = time.monotonic()
    body, done_at = b"", None
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=30,
                      json=_chat(MATH, model="math", stream=True, after_done=20)) as r:
        for chunk in r.iter_raw():
            body += chunk
            if done_at is None and b"[DONE]" in body:
                done_at = time.monotonic()
    assert done_at is not None and time.monotonic() - done_at < 0.5
    assert time.monotonic() - start < 5
    assert body.endswith(b"data: [DONE]\n\n") and b"error" not in body, body[-200:]
    ports = set()
    for _ in range(3):  # well-behaved streams: one upstream connection for all
        with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                          json=_chat(MATH, model="math", stream=True)) as r:
            assert r.read().endswith(b"data: [DONE]\n\n")
        ports.add(httpx.get(upstreams["math"].url + "/control").json()["client_port"])
    assert len(ports) == 1, ports


def test_done_event_end_finds_the_end_of_the_done_event() -> None:
    from ir3de.serve import _done_event_end

    for events, end in ((b"data: 1\n\ndata: [DONE]\n\n", 23), (b"data: [DONE]\r\n\r\nx", 16),
                        (b"data:[DONE]\n\n", 13), (b"data: 1\n\n", 0),
                        (b'data: {"a": "data: [DONE]"}\n\n', 0)):
        buffer = bytearray(events)
        assert _done_event_end(buffer, len(buffer)) == end, events
    assert _done_event_end(bytearray(b"data: [DONE]\n\n"), 10) == 0  # not whole yet


def test_sse_event_ends_with_any_line_ending() -> None:
    """The relay cuts an upstream stream after whole events only, whatever its line
    endings, and finds an event end split across two chunks."""
    from ir3de.serve import _whole_events

    for eol in (b"\n", b"\r", b"\r\n"):
        event = b"data: {}" + eol + eol
        assert _whole_events(bytearray(event * 2 + event[:-1]), 0) == 2 * len(event)
        assert _whole_events(bytearray(event[:-1]), 0) == 0
        assert _whole_events(bytearray(b"data: {}" + eol + b"event: x" + eol), 0) == 0
        split = bytearray(event[:-1])  # the chunk so far, then its last byte arrives
        start = max(len(split) - 2, 0)
        split += event[-1:]
        assert _whole_events(split, start) == len(event)


def test_sdk_upstream_down_and_timeout(stats_files, upstreams, tmp_path) -> None:
    """A dead expert falls back; the fallback timing out has nowhere to go: 504, which the
    SDK raises as InternalServerError with the gateway's message."""
    openai = pytest.importorskip("openai")
    config = _config(tmp_path, stats_files, upstreams, {"math": 0.5})
    data = yaml.safe_load(config.read_text())
    data["experts"]["coding"]["url"] = f"http://127.0.0.1:{_free_port()}/v1"  # nobody there
    config.write_text(yaml.safe_dump(data))
    gw = _gateway(config)
    try:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0,
                           timeout=20) as client:
            r = client.completions.with_raw_response.create(model="ir3de", prompt=CODE)
            assert r.headers["x-ir3de-expert"] == "math"
            assert r.parse().choices[0].text == "answer from math to model qwen-math"
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="math", messages=_user(MATH),
                                               stream=True, extra_body={"hang": 2})
            assert caught.value.status_code == 504
            assert "expert 'math' did not answer within 0.5 s" in caught.value.message
            assert caught.value.body["type"] == "upstream_error"
    finally:
        gw.stop()


# ----------------------------------------------------------------- client API keys
# api_keys_env: /v1 needs one of the keys; /healthz, /metrics and the admin API do not.

CLIENT_KEYS = ("key-one", "key-two")


@pytest.fixture(scope="module")
def keyed(stats_files, upstreams, tmp_path_factory) -> Iterator[Proc]:
    """A gateway with client keys (spaces around them in the variable: ignored) whose
    coding expert has a key of its own."""
    config = _config(tmp_path_factory.mktemp("keyed"), stats_files, upstreams,
                     api_keys_env=KEYS_ENV)
    data = yaml.safe_load(config.read_text())
    data["experts"]["coding"]["api_key_env"] = "IR3DE_TEST_CODER_KEY"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = _gateway(config, env={KEYS_ENV: f" {CLIENT_KEYS[0]} , {CLIENT_KEYS[1]}",
                                 "IR3DE_TEST_CODER_KEY": "expert-secret"})
    yield proc
    proc.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_client_keys_guard_v1(keyed: Proc) -> None:
    """Without api_keys_env anyone who could reach the gateway used every expert, whatever
    its Authorization header said."""
    chat = keyed.url + "/v1/chat/completions"
    for headers, message, reason in (
            ({}, "no API key: send one of the gateway's client keys as 'Authorization: "
                 "Bearer <key>'", "missing"),
            ({"authorization": "Bearer"}, "no API key", "missing"),
            ({"authorization": f"Basic {CLIENT_KEYS[0]}"},
             "the Authorization header must be 'Bearer <key>'", "malformed"),
            (_bearer("sk-wrong-123"), "invalid API key: not one of the gateway's client keys",
             "invalid"),
            (_bearer(f"{CLIENT_KEYS[0]},{CLIENT_KEYS[1]}"), "invalid API key", "invalid"),
            (_bearer(CLIENT_KEYS[0][:-1]), "invalid API key", "invalid")):
        r = httpx.post(chat, json=_chat(MATH), headers=headers)
        assert r.status_code == 401, (headers, r.text)
        error = r.json()["error"]
        assert message in error["message"] and "wrong" not in error["message"]
        assert {k: v for k, v in error.items() if k != "message"} == {
            "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
        assert r.headers["www-authenticate"] == "Bearer"
        assert "x-ir3de-expert" not in r.headers
        metrics = httpx.get(keyed.url + "/metrics").text
        assert f'ir3de_unauthorized_total{{reason="{reason}"}}' in metrics
    assert 'ir3de_requests_total{expert="(gateway)",status="401"}' in metrics
    # either key, the scheme in any case; refused before the body is read (no 413)
    for key, scheme in zip(CLIENT_KEYS, ("Bearer", "bearer"), strict=True):
        r = httpx.post(chat, json=_chat(MATH), headers={"authorization": f"{scheme} {key}"})
        assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math", r.text
    assert httpx.post(chat, json=_chat("x" * 30_000)).status_code == 401
    assert httpx.post(chat, json=_chat("x" * 30_000), headers=_bearer(CLIENT_KEYS[0])
                      ).status_code == 413
    # every /v1 route, unknown ones included; the probes and the admin API are open
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/models/math"),
                         ("POST", "/v1/completions"), ("GET", "/v1/nowhere"),
                         ("GET", "/v1/chat/completions"), ("GET", "/nowhere")):
        assert httpx.request(method, keyed.url + path).status_code == 401, path
    assert httpx.get(keyed.url + "/v1/models", headers=_bearer(CLIENT_KEYS[1])
                     ).status_code == 200
    assert httpx.get(keyed.url + "/v1/nowhere", headers=_bearer(CLIENT_KEYS[1])
                     ).status_code == 404
    assert httpx.get(keyed.url + "/healthz").status_code == 200
    assert httpx.head(keyed.url + "/healthz").status_code == 200
    assert httpx.get(keyed.url + "/metrics").status_code == 200
    assert httpx.get(keyed.url + "/admin/experts", headers=_admin()).status_code == 200
    r = httpx.get(keyed.url + "/admin/experts", headers=_bearer(CLIENT_KEYS[0]))
    assert r.status_code == 401 and "admin bearer token" in r.json()["error"]["message"]


def test_client_key_is_not_forwarded_to_experts(keyed: Proc) -> None:
    """Experts get their own api_key_env, never the client's key."""
    key = _bearer(CLIENT_KEYS[0])
    r = httpx.post(keyed.url + "/v1/chat/completions", json=_chat(MATH), headers=key)
    assert r.headers["x-ir3de-expert"] == "math" and r.json()["auth"] is None
    r = httpx.post(keyed.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE},
                   headers=key)
    assert r.headers["x-ir3de-expert"] == "coding"
    assert r.json()["auth"] == "Bearer expert-secret"
    for model, auth in (("math", None), ("coding", "Bearer expert-secret")):
        with httpx.stream("POST", keyed.url + "/v1/chat/completions", headers=key,
                          json=_chat(MATH, model=model, stream=True, chunks=1,
                                     echo=True)) as r:
            first = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["auth"] == auth


def test_refused_requests_are_logged_under_the_same_path(keyed: Proc) -> None:
    """The access-log line of a request refused for its key said "/v1/chat/completions",
    every other line "/chat/completions"."""
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = _chat(MATH) if "chat" in path else {"model": "ir3de", "prompt": MATH}
        assert httpx.post(keyed.url + path, json=body).status_code == 401
        assert httpx.post(keyed.url + path, json=body, headers=_bearer(CLIENT_KEYS[0])
                          ).status_code == 200
        refused, served = _access_log(keyed)[-2:]
        assert refused["refused"] == "missing" and "refused" not in served
        assert refused["path"] == served["path"] == path.removeprefix("/v1"), (refused,
                                                                             served)


def test_sdk_client_keys(keyed: Proc) -> None:
    """The openai SDK sends its api_key as the bearer token: a wrong or missing one is the
    SDK's AuthenticationError, a right one works, streaming and async included."""
    openai = pytest.importorskip("openai")

    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=keyed.url + "/v1", api_key=key, max_retries=0,
                             timeout=20)

    with client("sk-wrong-123") as sdk:
        for stream in (False, True):
            with pytest.raises(openai.AuthenticationError) as caught:
                sdk.chat.completions.create(model="ir3de", messages=_user(MATH),
                                            stream=stream)
            assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
            assert caught.value.body["type"] == "invalid_request_error"
            assert "invalid API key" in caught.value.message
            assert "sk-wrong-123" not in caught.value.message
        with pytest.raises(openai.AuthenticationError):
            sdk.models.list()
        with pytest.raises(openai.AuthenticationError, match="no API key"):
            sdk.completions.create(model="ir3de", prompt=CODE,  # no Authorization at all
                                   extra_headers={"Authorization": openai.Omit()})
    with client(CLIENT_KEYS[1]) as sdk:
        r = sdk.chat.completions.with_raw_response.create(model="ir3de", messages=_user(MATH))
        assert r.headers["x-ir3de-expert"] == "math"
        assert r.parse().choices[0].message.content == "answer from math to model qwen-math"
        stream = sdk.chat.completions.create(model="ir3de", messages=_user(MATH), stream=True,
                                             extra_body={"chunks": 2})
        assert [c.choices[0].delta.content for c in stream] == ["math-0 ", "math-1 "]
        assert [m.id for m in sdk.models.list()] == ["ir3de", "math", "coding"]
        assert sdk.models.retrieve("coding").id == "coding"

    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=keyed.url + "/v1", api_key=CLIENT_KEYS[0],
                                      max_retries=0, timeout=20) as sdk:
            answer = await sdk.completions.create(model="ir3de", prompt=CODE)
            return answer.choices[0].text

    assert asyncio.run(run()) == "answer from coding to model coding"


# ----------------------------------------------------------------- cooldowns
# An expert that keeps failing (refused connections, timeouts) gets no requests for a while:
# routed ones go to the fallback, those that name it get a 503 with retry-after.


def _with_experts(config: Path, **experts: dict) -> Path:
    """``config`` with these experts' settings changed (or these experts added)."""
    data = yaml.safe_load(config.read_text())
    for name, settings in experts.items():
        data["experts"].setdefault(name, {}).update(settings)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def _closed_url() -> str:
    return f"http://127.0.0.1:{_free_port()}/v1"  # nobody listens there: refused


def _experts(gw: Proc) -> dict[str, dict]:
    listed = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
    return {e["name"]: e for e in listed["experts"]}


def _health(gw: Proc, name: str) -> tuple[str, int, int]:
    """An expert's (state, consecutive failures, cooldowns started), from the admin API."""
    e = _experts(gw)[name]
    return e["state"], e["consecutive_failures"], e["cooldowns"]


def _metrics(gw: Proc) -> dict[str, float]:
    """The gateway's samples as ``{'name{labels}': value}``."""
    samples = (line.rsplit(" ", 1) for line in httpx.get(gw.url + "/metrics").text.splitlines()
               if line and not line.startswith("#"))
    return {key: float(value) for key, value in samples}


def _log_events(proc: Proc) -> list[dict]:
    """The JSON log lines with an "event" that the process has written so far (read
    without moving the offset it writes at)."""
    text = os.pread(proc.log.fileno(), 1 << 22, 0).decode(errors="replace")
    return [json.loads(line[line.index("{"):]) for line in _whole_lines(text)
            if '{"event": ' in line]


def _routed(gw: Proc, n: int = 1, **extra) -> list[httpx.Response]:
    """``n`` routed completions of CODE (the router picks coding), all at once."""
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as c:
            return await asyncio.gather(*(
                c.post(gw.url + "/v1/completions",
                       json={"model": "ir3de", "prompt": CODE, **extra}) for _ in range(n)))

    return asyncio.run(run())


def _experts_of(responses: list[httpx.Response]) -> set[tuple[int, str]]:
    return {(r.status_code, r.headers.get("x-ir3de-expert")) for r in responses}


def test_cooldown_spares_requests_an_expert_that_refuses_connections(
        stats_files, upstreams, tmp_path) -> None:
    """Each request to a dead expert paid a refused connection and its retry before going
    to the fallback. After cooldown_failures of them in a row the expert is not tried until
    its cooldown is over; then one request finds it back up."""
    port = _free_port()
    spare_url = _closed_url()
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=2,
                                   cooldown_seconds=1.5),
                           coding={"url": f"http://127.0.0.1:{port}/v1", "timeout": 0.2},
                           spare={"url": spare_url})  # an endpoint the router does not use
    gw = _gateway(config)
    revived = None
    try:
        for _ in range(2):  # refused, and again on the retry: the fallback answers
            assert _experts_of(_routed(gw)) == {(200, "math")}
        assert _experts_of(_routed(gw)) == {(200, "math")}  # cooling down: not even tried
        metrics = _metrics(gw)
        assert metrics['ir3de_upstream_errors_total{expert="coding",kind="ConnectError"}'] == 4
        assert metrics['ir3de_fallbacks_total{reason="upstream_failure"}'] == 2
        assert metrics['ir3de_fallbacks_total{reason="expert_down"}'] == 1
        assert metrics['ir3de_cooldowns_total{expert="coding"}'] == 1
        assert metrics["ir3de_experts_cooling_down"] == 1

        # Asked for by name: a 503 saying when to come back.
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE, model="coding"))
        assert r.status_code == 503 and r.headers["retry-after"] in ("1", "2"), r.text
        assert r.json()["error"] == {
            "message": "expert 'coding' is unavailable: it failed 2 times in a row "
                       "(connection errors, timeouts or fallback_statuses answers) and will "
                       "be tried again in "
                       f"{r.headers['retry-after']} s",
            "type": "upstream_error", "param": None, "code": "expert_unavailable"}
        assert 'ir3de_requests_total{expert="coding",status="503"}' in httpx.get(
            gw.url + "/metrics").text

        health = httpx.get(gw.url + "/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert list(health.json()["cooling_down"]) == ["coding"]
        assert 0 < health.json()["cooling_down"]["coding"] <= 1.5
        coding, math = _experts(gw)["coding"], _experts(gw)["math"]
        assert _health(gw, "coding") == ("cooling_down", 2, 1)
        assert 0 < coding["retry_in"] <= 1.5
        until = datetime.fromisoformat(coding["cooling_down_until"])
        assert 0 < (until - datetime.now(timezone.utc)).total_seconds() <= 1.5
        assert {k: math[k] for k in ("state", "consecutive_failures", "cooling_down_until",
                                     "retry_in", "cooldowns")} == {
            "state": "ok", "consecutive_failures": 0, "cooling_down_until": None,
            "retry_in": None, "cooldowns": 0}

        # A removed expert's failures are forgotten: added again, it starts clean.
        for _ in range(2):  # (named: a 502, never another expert's answer)
            r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE, model="spare"))
            assert r.status_code == 502 and r.headers["x-ir3de-expert"] == "spare", r.text
        assert _health(gw, "spare") == ("cooling_down", 2, 1)
        assert httpx.delete(gw.url + "/admin/experts/spare", headers=_admin()
                            ).status_code == 200
        assert "spare" not in httpx.get(gw.url + "/healthz").json()["cooling_down"]
        added = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": spare_url, "name": "spare"},
                           files={"stats": ("law.stats", stats_files["law"].read_bytes())})
        assert added.status_code == 200, added.text
        spare = {e["name"]: e for e in added.json()["experts"]}["spare"]
        assert (spare["state"], spare["consecutive_failures"], spare["cooldowns"]) == \
            ("ok", 0, 0)
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE, model="spare"))
        assert r.status_code == 502  # tried (and refused) rather than a 503
        # (its series went with it: counted from 0 again, this request's two attempts)
        assert _metrics(gw)['ir3de_upstream_errors_total{expert="spare",kind="ConnectError"}'] \
            == 2

        # The cooldown over, the next request tries coding, which is back: it answers.
        revived = Proc([sys.executable, str(UPSTREAM), "coding", "{port}"], "/v1/models",
                       port=port)
        assert _wait_for(lambda: _health(gw, "coding")[0] == "half_open", timeout=5)
        assert _experts_of(_routed(gw)) == {(200, "coding")}
        assert _health(gw, "coding") == ("ok", 0, 1)
        assert httpx.get(gw.url + "/healthz").json()["cooling_down"] == {}
        assert _metrics(gw)["ir3de_experts_cooling_down"] == 0
        events = [(e["event"], e["expert"], e.get("reason")) for e in _log_events(gw)
                  if e["event"].startswith("cooldown")]
        assert events == [("cooldown_start", "coding", None), ("cooldown_start", "spare", None),
                          ("cooldown_end", "spare", "removed"),
                          ("cooldown_end", "coding", "answered")], events
        # each names the request it happened in (a completion, or the admin removal)
        served = {line["request_id"]: line["path"] for line in _request_log(gw)}
        paths = [served[e["request_id"]] for e in _log_events(gw)
                 if e["event"].startswith("cooldown")]
        assert paths[2] == "/admin/experts/spare", paths
        assert {paths[0], paths[1], paths[3]} <= {"/chat/completions", "/completions"}, paths
    finally:
        gw.stop()
        if revived is not None:
            revived.stop()


def test_cooldown_after_timeouts_probes_with_one_request(stats_files, upstreams,
                                                        tmp_path) -> None:
    """An expert that accepts requests but does not answer in time made every request wait
    its whole timeout. Counted failures reset on any answer (an HTTP error included); once
    it cools down no request reaches it, however many arrive at once; after the cooldown
    one request tries it while the others still go to the fallback, and its failure starts
    the next cooldown at once."""
    slow = _upstream("coding")

    def control(**settings) -> int:  # the requests slow has received
        return httpx.post(slow.url + "/control", json=settings).json()["requests"] \
            if settings else httpx.get(slow.url + "/control").json()["requests"]

    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=3,
                                   cooldown_seconds=0.8),
                           coding={"url": slow.url + "/v1", "timeout": 0.2})
    gw = _gateway(config)
    try:
        control(hang=0.5)  # > the 0.2 s timeout; short: stopping slow waits for it
        for _ in range(2):
            assert _experts_of(_routed(gw)) == {(200, "math")}  # after coding's 0.2 s
        assert _health(gw, "coding") == ("ok", 2, 0)
        control(hang=0)
        r, = _routed(gw, force_status=500)  # an answer, error or not: the count resets
        assert (r.status_code, r.headers["x-ir3de-expert"]) == (500, "coding")
        assert _health(gw, "coding") == ("ok", 0, 0)

        control(hang=0.5)
        assert _experts_of(_routed(gw, 3)) == {(200, "math")}  # the third failure...
        assert _health(gw, "coding")[::2] == ("cooling_down", 1)  # ...starts a cooldown
        seen = control()
        assert seen == 6
        # Concurrent requests once it cools down: none reaches coding or waits for it.
        assert _experts_of(_routed(gw, 20)) == {(200, "math")}
        assert control() == seen
        metrics = _metrics(gw)
        assert metrics['ir3de_fallbacks_total{reason="expert_down"}'] == 20
        assert metrics['ir3de_fallbacks_total{reason="upstream_failure"}'] == 5

        # Cooldown over: of ten requests at once, one tries coding (and times out); the
        # others are not held up behind it.
        assert _wait_for(lambda: _health(gw, "coding")[0] == "half_open", timeout=5)
        assert _experts_of(_routed(gw, 10)) == {(200, "math")}
        assert control() == seen + 1
        assert _health(gw, "coding") == ("cooling_down", 4, 2)  # again, at once
        metrics = _metrics(gw)
        assert metrics['ir3de_fallbacks_total{reason="expert_down"}'] == 29
        assert metrics['ir3de_fallbacks_total{reason="upstream_failure"}'] == 6
        assert metrics['ir3de_cooldowns_total{expert="coding"}'] == 2

        control(hang=0)  # recovered: the next probe gets an answer and resets the count
        assert _wait_for(lambda: _health(gw, "coding")[0] == "half_open", timeout=5)
        assert _experts_of(_routed(gw)) == {(200, "coding")}
        assert _health(gw, "coding") == ("ok", 0, 2)
        assert _experts_of(_routed(gw, 5)) == {(200, "coding")}
    finally:
        gw.stop()
        slow.stop()


def test_cooldown_without_a_usable_fallback_is_a_503(stats_files, upstreams,
                                                     tmp_path) -> None:
    """A routed request whose expert cools down, and whose fallback is that same expert or
    cools down too, gets the 503; so does the openai SDK, as InternalServerError."""
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=1,
                                   cooldown_seconds=30),
                           math={"url": _closed_url()}, coding={"url": _closed_url()})
    gw = _gateway(config)
    try:
        r, = _routed(gw)  # coding refuses, then so does the fallback: both cool down
        assert r.status_code == 502 and r.json()["error"]["message"] == \
            "expert 'coding' failed (ConnectError); expert 'math' is unreachable (ConnectError)"
        assert r.headers["x-ir3de-expert"] == "math"  # (the last one tried)
        why = "it failed 1 time in a row (connection errors, timeouts or fallback_statuses " \
              "answers) and will be tried " \
              "again in {} s"
        r, = _routed(gw)
        wait = r.headers["retry-after"]  # 30 s, less the time taken so far
        assert r.status_code == 503 and 20 <= int(wait) <= 30, r.text
        assert r.headers["x-ir3de-expert"] == "coding"  # the router's pick
        assert r.json()["error"]["message"] == \
            f"expert 'coding' is unavailable: {why.format(wait)}; so is the fallback " \
            f"expert 'math': {why.format(wait)}"
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH))  # math's own
        assert r.status_code == 503 and r.json()["error"]["message"] == \
            f"expert 'math' is unavailable: {why.format(r.headers['retry-after'])}"
        assert sorted(httpx.get(gw.url + "/healthz").json()["cooling_down"]) == \
            ["coding", "math"]
        metrics = _metrics(gw)
        assert metrics["ir3de_experts_cooling_down"] == 2
        assert metrics['ir3de_requests_total{expert="math",status="503"}'] == 1
        assert 'ir3de_fallbacks_total{reason="expert_down"}' not in metrics

        openai = pytest.importorskip("openai")
        # max_retries=0: the SDK retries a 503 by default, after retry-after
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0,
                           timeout=20) as client, \
                pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="coding", messages=_user(CODE))
        error = caught.value
        assert error.status_code == 503 and error.code == "expert_unavailable"
        assert error.body["type"] == "upstream_error"
        assert "expert 'coding' is unavailable: it failed 1 time in a row" in error.message
        assert 1 <= int(error.response.headers["retry-after"]) <= 30
        # one access-log line each, which a 502, 503 or 504 did not get
        assert [(e["model"], e["expert"], e["fallback"], e["status"])
                for e in _access_log(gw)] == [("ir3de", "math", "upstream_failure", 502),
                                              ("ir3de", "coding", None, 503),
                                              ("ir3de", "math", None, 503),
                                              ("coding", "coding", None, 503)]
    finally:
        gw.stop()


def test_a_fallback_chosen_over_a_healthy_pick_that_fails_leaves_it_to_the_pick(
        stats_files, upstreams, tmp_path) -> None:
    """Low confidence sent a request to the fallback; with the fallback down it was a 502,
    then a 503, naming the fallback alone, while the router's pick was up and never tried.
    Now the pick answers (no x-ir3de-fallback: the fallback did not answer), the access
    line keeping the reason as fallback_skipped; with both down the 503 names the pick."""
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=1,
                                   cooldown_seconds=30, threshold=0.9999),
                           math={"url": _closed_url()})
    gw = _gateway(config)
    try:
        for _ in range(2):  # the fallback refuses, then it is cooling down
            r, = _routed(gw, echo=True)
            assert r.status_code == 200 and r.json()["received"]["prompt"] == CODE
            assert (r.headers["x-ir3de-expert"], r.headers["x-ir3de-routed-to"]) == \
                ("coding", "coding")
            assert "x-ir3de-fallback" not in r.headers
        assert [(e["expert"], e["routed_to"], e["fallback"], e.get("fallback_skipped"),
                 e["status"]) for e in _access_log(gw)] == \
            [("coding", "coding", None, "low_confidence", 200)] * 2
        assert "math" in httpx.get(gw.url + "/healthz").json()["cooling_down"]
        # counted as sent to the fallback once: the first was, the second was not
        assert _metrics(gw)['ir3de_fallbacks_total{reason="low_confidence"}'] == 1
    finally:
        gw.stop()
    (tmp_path / "both").mkdir()
    config = _with_experts(_config(tmp_path / "both", stats_files, upstreams,
                                   cooldown_failures=1, cooldown_seconds=30, threshold=0.9999),
                           math={"url": _closed_url()}, coding={"url": _closed_url()})
    gw = _gateway(config)
    try:
        r, = _routed(gw)
        assert r.status_code == 502 and r.json()["error"]["message"] == \
            "expert 'math' failed (ConnectError); expert 'coding' is unreachable (ConnectError)"
        r, = _routed(gw)
        assert r.status_code == 503 and "; so is the router's pick 'coding': it failed" in \
            r.json()["error"]["message"], r.text
    finally:
        gw.stop()


def test_a_second_expert_gets_a_request_id_of_its_own(stats_files, upstreams,
                                                      tmp_path) -> None:
    """The pick timed out and the fallback got the same x-request-id: experts that are
    adapters of one vLLM server share its engine, which refuses an id still running."""
    config = _config(tmp_path, stats_files, upstreams, timeouts={"coding": 1})
    gw = _gateway(config)
    try:
        sent = []
        for headers in ({}, {"x-request-id": "trace-7"}):
            r = httpx.post(gw.url + "/v1/completions", headers=headers, timeout=20,
                           json={"model": "ir3de", "prompt": CODE, "hang": 3, "echo": True})
            assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math"
            rid = r.headers["x-ir3de-request-id"]
            received = r.json()["headers"]["x-request-id"]
            line = _logged(gw, rid)
            assert received == line["fallback_request_id"] != line.get("upstream_request_id",
                                                                        rid)
            assert re.fullmatch(re.escape(rid) + "-[0-9a-f]{8}", received)
            sent.append(received)
        assert sent[1].startswith("trace-7-")
    finally:
        gw.stop()


def test_cooldown_bookkeeping() -> None:
    """What real servers make hard to time: a failure of a request sent before the
    cooldown began neither counts nor restarts it; one probe at a time, released when it is
    cancelled; a removed expert's in-flight requests do not touch its new record."""
    from ir3de.serve import _Cooldowns, _Down, _Ticket

    now = [0.0]
    cooldowns = _Cooldowns(2, 10.0, clock=lambda: now[0])
    cooldowns.sync(["a"])
    early = [cooldowns.admit("a") for _ in range(4)]  # four requests in flight
    assert all(isinstance(t, _Ticket) and not t.probe for t in early)
    cooldowns.done(early[0], False)
    cooldowns.done(early[1], False)  # the second failure in a row: cooling down
    assert cooldowns.admit("a") == _Down("a", 2, 10.0)
    now[0] = 9.0
    cooldowns.done(early[2], False)  # out of date: no new cooldown
    assert cooldowns.describe("a")["retry_in"] == 1.0
    now[0] = 10.0
    assert cooldowns.describe("a")["state"] == "half_open"
    probe = cooldowns.admit("a")
    assert isinstance(probe, _Ticket) and probe.probe
    assert cooldowns.admit("a") == _Down("a", 2, 0.0)  # one probe at a time
    assert _Down("a", 2, 0.0).why() == "it failed 2 times in a row (connection errors, " \
                                       "timeouts or fallback_statuses answers) and a request " \
                                       "is trying it again now"
    assert cooldowns.refusing() == {"a": 0.0}
    cooldowns.done(early[3], False)  # out of date too: the probe decides
    assert cooldowns.describe("a")["state"] == "probing"
    cooldowns.done(probe, None)  # cancelled: the next request probes
    probe = cooldowns.admit("a")
    assert isinstance(probe, _Ticket) and probe.probe
    cooldowns.done(probe, False)  # a failed probe: the next cooldown at once
    assert cooldowns.describe("a")["state"] == "cooling_down"
    assert (cooldowns.describe("a")["consecutive_failures"], cooldowns.describe("a")[
        "cooldowns"]) == (3, 2)
    now[0] = 20.0
    probe = cooldowns.admit("a")
    cooldowns.done(probe, True)
    assert cooldowns.describe("a") == {"state": "ok", "consecutive_failures": 0,
                                       "cooling_down_until": None, "retry_in": None,
                                       "cooldowns": 2}
    in_flight = cooldowns.admit("a")
    cooldowns.sync([])  # removed...
    cooldowns.sync(["a"])  # ...and added again
    cooldowns.done(in_flight, False)
    assert cooldowns.describe("a")["consecutive_failures"] == 0

    off = _Cooldowns(0, 10.0, clock=lambda: now[0])  # cooldown_failures: 0
    off.sync(["a"])
    for _ in range(5):
        ticket = off.admit("a")
        assert isinstance(ticket, _Ticket)
        off.done(ticket, False)
    assert off.describe("a")["consecutive_failures"] == 5 and off.refusing() == {}


# ----------------------------------------------------------------- what a request gets, and logs
# A request that names its expert never gets another's answer; routed ones that fall back
# say what the router picked and why another expert answered; one access-log line each.


def _log_text(proc: Proc) -> str:
    """What the process has written to stderr so far. (pread: the process writes through a
    copy of this descriptor, so a seek here would move where its next line lands.)"""
    return os.pread(proc.log.fileno(), 1 << 22, 0).decode(errors="replace")


def _request_log(proc: Proc) -> list[dict]:
    """The access-log lines (one per request) the process has written so far."""
    return [json.loads(line[line.index("{"):]) for line in _whole_lines(_log_text(proc))
            if '{"request_id": ' in line]


def _whole_lines(text: str) -> list[str]:
    """The lines of a log that the process has finished writing: one it is still writing
    (read half-way, CI saw it) has no newline yet and is no JSON."""
    return text[:text.rfind("\n") + 1].splitlines()


def _access_log(proc: Proc) -> list[dict]:
    """The access-log lines of the completions requests the process has served so far."""
    return [line for line in _request_log(proc)
            if line["path"] in ("/chat/completions", "/completions")]


def _requests_seen(upstream: Proc) -> int:
    return httpx.get(upstream.url + "/control").json()["requests"]


def test_named_expert_that_fails_is_an_error_not_the_fallbacks_answer(
        stats_files, upstreams, tmp_path) -> None:
    """A request naming an expert that was down or timed out got the fallback's answer
    (200, x-ir3de-expert: math), though it may carry what that expert alone accepts (and
    a 503 once the expert cooled down). Now: 502/504 naming the expert, the fallback never
    sees it; a routed request still falls back. Each gets its access-log line, which a
    502/503/504 did not."""
    openai = pytest.importorskip("openai")
    slow = _upstream("coding")
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=0),
                           coding={"url": slow.url + "/v1", "timeout": 0.3},
                           spare={"url": _closed_url()})
    gw = _gateway(config)
    try:
        httpx.post(slow.url + "/control", json={"hang": 1})  # > coding's 0.3 s
        seen = _requests_seen(upstreams["math"])
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE, model="coding"))
        # the gateway's own error, but the expert it was meant for is named, as on an answer
        assert r.status_code == 504 and r.headers["x-ir3de-expert"] == "coding"
        assert r.json()["error"] == {
            "message": "expert 'coding' did not answer within 0.3 s (ReadTimeout)",
            "type": "upstream_error", "param": None, "code": None}
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0,
                           timeout=20) as client, \
                pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model="spare", prompt=[1, 2, 3])  # token ids
        assert caught.value.status_code == 502
        assert caught.value.body["message"] == "expert 'spare' is unreachable (ConnectError)"
        assert _requests_seen(upstreams["math"]) == seen  # the fallback saw neither
        r, = _routed(gw)  # routed: the fallback answers, and says why
        assert r.status_code == 200
        assert {k: r.headers.get(k) for k in ("x-ir3de-expert", "x-ir3de-routed-to",
                                              "x-ir3de-fallback")} == {
            "x-ir3de-expert": "math", "x-ir3de-routed-to": "coding",
            "x-ir3de-fallback": "upstream_failure"}
        assert 0 < float(r.headers["x-ir3de-confidence"]) <= 1
        assert _requests_seen(upstreams["math"]) == seen + 1
        lines = _access_log(gw)
        assert [(e["path"], e["model"], e["expert"], e["routed_to"], e["fallback"],
                 e["status"], e.get("error")) for e in lines] == [
            ("/chat/completions", "coding", "coding", None, None, 504,
             "expert 'coding' did not answer within 0.3 s (ReadTimeout)"),
            ("/completions", "spare", "spare", None, None, 502,
             "expert 'spare' is unreachable (ConnectError)"),
            ("/completions", "ir3de", "math", "coding", "upstream_failure", 200, None)]
        assert lines[2]["confidence"] == pytest.approx(float(r.headers["x-ir3de-confidence"]),
                                                       abs=1e-4)
    finally:
        gw.stop()
        slow.stop()


def test_an_expert_down_behind_its_proxy_is_a_failure_that_routed_requests_fall_back_from(
        stats_files, upstreams, tmp_path) -> None:
    """A load balancer in front of an expert that is down answers 502, 503 or 504 (an HTML
    page): the gateway relayed it, with neither the fallback nor a cooldown, which a
    refused connection gets. Now those statuses (fallback_statuses) are failures: a routed
    request goes on to the fallback, one that names the expert gets the answer as it came,
    and enough of them in a row cool the expert down. fallback_statuses: [] relays them."""
    down = _upstream("coding")
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=3),
                           coding={"url": down.url + "/v1"})
    gw = _gateway(config)
    try:
        httpx.post(down.url + "/control", json={"status": 503})
        r, = _routed(gw)
        assert (r.status_code, r.headers["x-ir3de-expert"], r.headers["x-ir3de-routed-to"],
                r.headers["x-ir3de-fallback"]) == (200, "math", "coding", "upstream_failure")
        assert r.json()["model"] == "math-upstream"  # the fallback answered
        r = httpx.post(gw.url + "/v1/completions", json={"model": "coding", "prompt": CODE})
        assert (r.status_code, r.headers["x-ir3de-expert"]) == (503, "coding")
        assert r.headers["content-type"].startswith("text/html") and b"<h1>503</h1>" in r.content
        _routed(gw)  # the third failure in a row: coding cools down
        assert "coding" in httpx.get(gw.url + "/healthz").json()["cooling_down"]
        r = httpx.post(gw.url + "/v1/completions", json={"model": "coding", "prompt": CODE})
        assert r.status_code == 503 and r.json()["error"]["code"] == "expert_unavailable"
        metrics = _metrics(gw)
        assert metrics['ir3de_upstream_errors_total{expert="coding",kind="HTTP 503"}'] == 3
        assert metrics['ir3de_fallbacks_total{reason="upstream_failure"}'] == 2
        failures = [e for e in _log_events(gw) if e["event"] == "upstream_error"]
        assert [(e["expert"], e["error"]) for e in failures] == [("coding", "HTTP 503")] * 3
        assert len({e["request_id"] for e in failures}) == 3
    finally:
        gw.stop()
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "fallback_statuses": []}))
    gw = _gateway(config)
    try:
        r, = _routed(gw)
        assert (r.status_code, r.headers["x-ir3de-expert"]) == (503, "coding")
        assert "x-ir3de-fallback" not in r.headers
    finally:
        gw.stop()
        down.stop()


def test_fallback_headers_and_log_name_the_routers_pick_and_the_reason(
        stats_files, upstreams, tmp_path) -> None:
    """A low-confidence fallback answered with x-ir3de-expert: math and the confidence of
    the router's pick (coding), which appeared nowhere; the log's routed_to was the
    fallback here but the failed expert after an upstream failure. Admin changes were not
    logged at all; an api_key_env naming an unset variable was accepted."""
    key_env = "IR3DE_TEST_LAW_KEY"
    gw = _gateway(_config(tmp_path, stats_files, upstreams, admin_key_envs=[
        key_env, "IR3DE_TEST_UNSET_KEY", "IR3DE_TEST_EMPTY_KEY"]),
                  env={key_env: "law-secret", "IR3DE_TEST_EMPTY_KEY": ""})
    try:
        picked = httpx.post(gw.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE})
        assert picked.headers["x-ir3de-expert"] == picked.headers["x-ir3de-routed-to"] == \
            "coding"
        assert "x-ir3de-fallback" not in picked.headers
        r = httpx.patch(gw.url + "/admin/settings", headers=_admin(), json={"threshold": 0.9999})
        assert r.status_code == 200, r.text
        r = httpx.post(gw.url + "/v1/completions", json={"model": "ir3de", "prompt": CODE})
        assert {k: r.headers.get(k) for k in ("x-ir3de-expert", "x-ir3de-routed-to",
                                              "x-ir3de-fallback", "x-ir3de-confidence")} == {
            "x-ir3de-expert": "math", "x-ir3de-routed-to": "coding",
            "x-ir3de-fallback": "low_confidence",
            "x-ir3de-confidence": picked.headers["x-ir3de-confidence"]}
        image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
        r = httpx.post(gw.url + "/v1/chat/completions",
                       json={"model": "ir3de", "messages": [{"role": "user", "content": image}]})
        assert (r.headers["x-ir3de-expert"], r.headers["x-ir3de-fallback"]) == ("math",
                                                                                 "no_text")
        assert "x-ir3de-routed-to" not in r.headers and "x-ir3de-confidence" not in r.headers
        assert httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                           json={"threshold": 0}).status_code == 200
        assert [(e["expert"], e["routed_to"], e["fallback"], e["status"])
                for e in _access_log(gw)] == [("coding", "coding", None, 200),
                                              ("math", "coding", "low_confidence", 200),
                                              ("math", None, "no_text", 200)]

        law = {"stats": ("law.stats", stats_files["law"].read_bytes())}
        plain = upstreams["law"].url + "/v1"
        url = plain.replace("http://", "http://user:pass-word@")
        for env, problem in (("IR3DE_TEST_UNSET_KEY", "is not set"),
                             ("IR3DE_TEST_EMPTY_KEY", "is empty")):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(), files=law,
                           data={"url": plain, "name": "law", "api_key_env": env})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "api_key_env"
            assert r.json()["error"]["message"].startswith(
                f"api_key_env: the environment variable {env} {problem}")
        # (a url's credentials are never sent with an api_key_env: see
        # test_url_credentials_and_api_key_env_are_refused_together)
        for data in ({"url": url}, {"url": plain, "api_key_env": key_env}):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(), files=law,
                           data={"name": "law", **data})
            assert r.status_code == 200, r.text
            assert httpx.delete(gw.url + "/admin/experts/law",
                                headers=_admin()).status_code == 200
        events = [e for e in _log_events(gw) if e["event"] == "admin"]
        # each with its admin request's id (checked elsewhere), here set aside
        assert all(e.pop("request_id").startswith("req_") for e in events)
        removed = {"event": "admin", "action": "remove_expert", "expert": "law",
                   "routed": True, "client": "127.0.0.1"}
        assert events == [
            {"event": "admin", "action": "settings",
             "settings": {"threshold": {"from": 0.0, "to": 0.9999}}, "client": "127.0.0.1"},
            {"event": "admin", "action": "settings",
             "settings": {"threshold": {"from": 0.9999, "to": 0}}, "client": "127.0.0.1"},
            {"event": "admin", "action": "add_expert", "expert": "law", "url": plain,
             "model": None, "api_key_env": None, "timeout": 60.0, "client": "127.0.0.1"},
            removed,
            {"event": "admin", "action": "add_expert", "expert": "law", "url": plain,
             "model": None, "api_key_env": key_env, "timeout": 60.0, "client": "127.0.0.1"},
            removed]
        log = os.pread(gw.log.fileno(), 1 << 22, 0).decode()
        assert "pass-word" not in log and "law-secret" not in log and TOKEN not in log
    finally:
        gw.stop()


def test_headers_beyond_latin1_are_encoded_or_dropped(stats_files, upstreams,
                                                     tmp_path) -> None:
    """An expert named 数学 or an upstream x-request-id of € made building the reply raise
    UnicodeEncodeError (Starlette encodes header values as Latin-1) after the upstream had
    answered: a text/plain 500, no access-log line, and a stream never closed."""
    from urllib.parse import unquote

    config = _config(tmp_path, stats_files, upstreams, threshold=1.0, fallback="数学")
    gw = _gateway(_with_experts(config, **{"数学": {"url": upstreams["math"].url + "/v1"}}))
    try:
        url = gw.url + "/v1/chat/completions"
        for stream in (False, True):
            r = httpx.post(url, json=_chat(CODE, stream=stream))  # low confidence: 数学
            assert r.status_code == 200, r.text
            assert r.headers["x-ir3de-expert"] == "%E6%95%B0%E5%AD%A6"
            assert unquote(r.headers["x-ir3de-expert"]) == "数学"
            assert r.headers["x-ir3de-routed-to"] == "coding"
            assert r.headers["x-ir3de-fallback"] == "low_confidence"
            r = httpx.post(url, json=_chat(MATH, model="数学", stream=stream))
            assert r.status_code == 200, r.text
            assert ("math-4" if stream else "answer from math") in r.text
            assert unquote(r.headers["x-ir3de-expert"]) == "数学"
            tag = f"euro-{stream}"
            r = httpx.post(url, json=_chat(MATH, model="math", stream=stream, tag=tag,
                                           utf8_headers={"x-request-id": "€"},
                                           headers={"x-ratelimit-limit-requests": "9"}))
            assert r.status_code == 200, r.text
            # the expert's is dropped (no header can carry it): the gateway's own instead
            assert r.headers["x-request-id"] == r.headers["x-ir3de-request-id"] != "€"
            assert r.headers["x-ratelimit-limit-requests"] == "9"
            if stream:
                state = upstreams["math"].url + f"/streams/{tag}"
                assert _wait_for(lambda s=state: httpx.get(s).json()["state"] == "finished")
        lines = [line for line in _access_log(gw) if line["path"] == "/chat/completions"]
        assert [(line["status"], line["expert"]) for line in lines] == \
            [(200, "数学"), (200, "数学"), (200, "math")] * 2
        assert "Traceback" not in os.pread(gw.log.fileno(), 1 << 22, 0).decode()
    finally:
        gw.stop()


def test_upstream_answer_keeps_its_content_type(gateway: Proc) -> None:
    """An upstream error without a content type reached the client as application/json,
    though its body was plain text."""
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   json=_chat(MATH, model="math", plain="upstream exploded", force_status=500))
    assert (r.status_code, r.text) == (500, "upstream exploded")
    assert "content-type" not in r.headers and r.headers["x-ir3de-expert"] == "math"
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   json=_chat(MATH, plain="busy", force_status=503,
                              headers={"content-type": "text/plain"}))
    assert (r.status_code, r.text, r.headers["content-type"]) == (503, "busy", "text/plain")
    r = httpx.post(gateway.url + "/v1/chat/completions", json=_chat(MATH))
    assert r.headers["content-type"] == "application/json"


# ----------------------------------------------------------------- misbehaving upstreams
# tests/servers/raw.py answers what no HTTP framework would send: a body byte by byte, a
# status of 999, a truncated body, bytes that are not HTTP.
RAW = Path(__file__).parent / "servers" / "raw.py"


@pytest.fixture(scope="module")
def odd(stats_files, upstreams, tmp_path_factory) -> Iterator[Proc]:
    """A gateway whose coding expert is tests/servers/raw.py (timeout 1 s; cooldowns off),
    with an expert "azure" whose URL has a query, one whose name holds a %, and "stuck",
    a server that never accepts a connection."""
    raw = Proc([sys.executable, str(RAW), "{port}"], "/")
    # a listening socket whose backlog is full: connections to it are never made
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    waiting = [socket.socket() for _ in range(3)]
    for sock in waiting:
        sock.setblocking(False)
        sock.connect_ex(stuck.getsockname())
    config = _with_experts(
        _config(tmp_path_factory.mktemp("odd"), stats_files, upstreams, cooldown_failures=0),
        coding={"url": raw.url + "/v1", "timeout": 1},
        azure={"url": upstreams["math"].url + "/v1/?api-version=2024-02-01"},
        stuck={"url": f"http://127.0.0.1:{stuck.getsockname()[1]}/v1", "timeout": 0.5},
        **{"cs%2Fv2": {"url": upstreams["math"].url + "/v1"}})
    proc = _gateway(config)
    yield proc
    proc.stop()
    raw.stop()
    for sock in [stuck, *waiting]:
        sock.close()


def test_expert_url_keeps_its_query(odd: Proc, upstreams: dict[str, Proc]) -> None:
    """An expert URL with a query (Azure's ?api-version=) had the API path appended to
    the query: POST /v1/?api-version=2024-02-01/chat/completions. A fragment was sent as the
    path's end: POST /v1 (refused now, here and in the config)."""
    r = httpx.post(odd.url + "/v1/chat/completions", json=_chat(MATH, model="azure", echo=True))
    assert r.status_code == 200, r.text
    assert r.json()["query"] == "api-version=2024-02-01"
    r = httpx.post(odd.url + "/admin/experts", headers=_admin(),
                   data={"url": upstreams["law"].url + "/v1#frag"},
                   files={"stats": ("law.stats", b"unread")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "url", r.text
    assert "url must not hold a fragment ('#...')" in r.json()["error"]["message"]


def test_timeout_bounds_a_whole_answer(odd: Proc) -> None:
    """timeout bounded each read, not the answer: a body sent a byte every 0.3 s held a
    non-streaming request for a minute with timeout 1."""
    start = time.monotonic()
    r = httpx.post(odd.url + "/v1/chat/completions", timeout=10,
                   json=_chat(CODE, model="coding", mode="trickle"))
    assert r.status_code == 504, r.text
    assert r.json()["error"]["message"] == \
        "expert 'coding' did not answer within 1 s (ReadTimeout)"
    assert time.monotonic() - start < 3
    r = httpx.post(odd.url + "/v1/chat/completions", timeout=10,  # routed: the fallback
                   json=_chat(CODE, mode="trickle"))
    assert (r.status_code, r.headers["x-ir3de-expert"], r.headers["x-ir3de-fallback"]) == \
        (200, "math", "upstream_failure")
    assert time.monotonic() - start < 6
    r = httpx.post(odd.url + "/v1/chat/completions", json=_chat(CODE, model="coding"))
    assert (r.status_code, r.json()["model"]) == (200, "raw")  # a whole answer in time


def test_a_stream_must_begin_within_the_timeout(odd: Proc) -> None:
    """A stream whose headers came but no event (a stuck engine behind a server that sends
    a stream's headers as it takes the request, as vLLM's does) was a 200 ending in an
    error event after the timeout: the fallback never answered, and the expert never
    cooled down however often it did so. An error answering a stream, read whole, was
    read without the whole answer's deadline: a byte every 0.3 s held it for 30 s."""
    def failures() -> int:
        r = httpx.get(odd.url + "/admin/experts", headers=_admin())
        return next(e for e in r.json()["experts"] if e["name"] == "coding")[
            "consecutive_failures"]

    r = httpx.post(odd.url + "/v1/chat/completions", json=_chat(CODE, model="coding"))
    assert r.status_code == 200 and failures() == 0  # (an answer resets the count)
    start = time.monotonic()
    r = httpx.post(odd.url + "/v1/chat/completions", timeout=10,
                   json=_chat(CODE, model="coding", mode="stall", stream=True))
    assert r.status_code == 504, r.text
    assert r.json()["error"]["message"] == \
        "expert 'coding' did not answer within 1 s (ReadTimeout)"
    assert time.monotonic() - start < 3 and failures() == 1
    r = httpx.post(odd.url + "/v1/chat/completions", timeout=10,  # routed: the fallback
                   json=_chat(CODE, mode="stall", stream=True))
    assert (r.status_code, r.headers["x-ir3de-expert"], r.headers["x-ir3de-fallback"]) == \
        (200, "math", "upstream_failure")
    assert r.text.rstrip().endswith("data: [DONE]") and failures() == 2
    start = time.monotonic()
    r = httpx.post(odd.url + "/v1/chat/completions", timeout=10,
                   json=_chat(CODE, model="coding", mode="trickle", status=400, stream=True))
    assert r.status_code == 504, r.text
    assert time.monotonic() - start < 3 and failures() == 3


def test_upstream_status_beyond_http_is_a_502(odd: Proc) -> None:
    """An upstream status line "HTTP/1.1 999 X" made uvicorn fail to send the reply
    (KeyError in its status phrases): the client got an empty reply."""
    for status in (999, 600):
        r = httpx.post(odd.url + "/v1/chat/completions",
                       json=_chat(CODE, model="coding", mode="status", status=status))
        assert r.status_code == 502, (status, r.text)
        assert r.json()["error"] == {
            "message": f"expert 'coding' answered with status {status}, which is not an "
                       "HTTP status (100-599)", "type": "upstream_error", "param": None,
            "code": None}
        assert r.headers["x-ir3de-expert"] == "coding"
        assert r.headers["x-should-retry"] == "false"
    r = httpx.post(odd.url + "/v1/chat/completions",
                   json=_chat(CODE, model="coding", mode="status", status=599))
    assert r.status_code == 599 and r.json()["model"] == "raw"


def test_broken_answer_is_told_from_an_unreachable_expert(odd: Proc) -> None:
    """An upstream that answered with a truncated body or with bytes that are not HTTP was
    "unreachable (RemoteProtocolError)"; one never connected to "did not answer"."""
    for mode in ("truncated", "garbage"):
        r = httpx.post(odd.url + "/v1/chat/completions",
                       json=_chat(CODE, model="coding", mode=mode))
        assert r.status_code == 502, (mode, r.text)
        assert r.json()["error"]["message"] == (
            "expert 'coding' was reached, but sent a malformed or truncated answer or closed "
            "the connection without one (RemoteProtocolError)")
    r = httpx.post(odd.url + "/v1/chat/completions", json=_chat(CODE, model="stuck"))
    assert r.status_code == 504, r.text
    assert r.json()["error"]["message"] == \
        "expert 'stuck' is unreachable: no connection within 0.5 s (ConnectTimeout)"


def test_a_reused_connection_the_expert_closes_is_sent_again(odd: Proc) -> None:
    """The keep-alive race towards an expert: the gateway reuses an idle connection just as
    the expert closes it, and the request gets no answer. That was a 502 (the fallback for
    a routed request); the request now goes again, once, on a new connection."""
    def closed_errors() -> float:
        key = 'ir3de_upstream_errors_total{expert="coding",kind="RemoteProtocolError"}'
        return _metrics(odd).get(key, 0.0)

    before = closed_errors()
    for model in ("coding", "ir3de"):
        # the first leaves an idle connection that has answered; the second reuses it
        assert httpx.post(odd.url + "/v1/chat/completions",
                          json=_chat(CODE, model="coding")).status_code == 200
        r = httpx.post(odd.url + "/v1/chat/completions",
                       json=_chat(CODE, model=model, mode="close_reused"))
        assert (r.status_code, r.json()["model"]) == (200, "raw"), r.text
        assert r.headers["x-ir3de-expert"] == "coding"
        assert "x-ir3de-fallback" not in r.headers
    assert closed_errors() == before + 2  # each closed attempt is still counted


def test_a_request_the_expert_held_before_closing_is_not_sent_again(odd: Proc) -> None:
    """An expert that read the request on a reused connection and died 0.7 s later (killed
    mid-prefill) had the request sent again on a new connection: the work paid for twice,
    the client none the wiser. Only the keep-alive race (a failure within a round trip) is
    retried now; and every failed attempt is logged, the retried one too."""
    for model in ("coding", "ir3de"):
        assert httpx.post(odd.url + "/v1/chat/completions",
                          json=_chat(CODE, model="coding")).status_code == 200
        r = httpx.post(odd.url + "/v1/chat/completions",
                       json=_chat(CODE, model=model, mode="crash_reused", delay=0.7))
        if model == "coding":  # named: its own 502
            assert r.status_code == 502, r.text
            assert "closed the connection without one" in r.json()["error"]["message"]
        else:  # routed: the fallback answers
            assert (r.status_code, r.headers["x-ir3de-expert"],
                    r.headers["x-ir3de-fallback"]) == (200, "math", "upstream_failure")
    # the quick close of the race: retried, and the retried attempt logged
    assert httpx.post(odd.url + "/v1/chat/completions",
                      json=_chat(CODE, model="coding")).status_code == 200
    assert httpx.post(odd.url + "/v1/chat/completions",
                      json=_chat(CODE, model="coding", mode="close_reused")).status_code == 200
    failures = [e for e in _log_events(odd) if e["event"] == "upstream_error"]
    assert failures[-1]["retried"] is True and failures[-1]["expert"] == "coding"
    assert [e["retried"] for e in failures[-3:-1]] == [False, False]


def test_expert_header_with_a_percent_decodes_back(odd: Proc) -> None:
    """An expert named cs%2Fv2 was sent as is in x-ir3de-expert, which unquote reads as
    cs/v2."""
    from urllib.parse import unquote

    r = httpx.post(odd.url + "/v1/chat/completions", json=_chat(MATH, model="cs%2Fv2"))
    assert r.status_code == 200, r.text
    assert r.headers["x-ir3de-expert"] == "cs%252Fv2"
    assert unquote(r.headers["x-ir3de-expert"]) == "cs%2Fv2"


def test_expert_names_with_control_characters_are_refused(odd: Proc) -> None:
    """An expert named "a\\nb" could be added through the admin API and never removed
    (DELETE /admin/experts/a%0Ab was a 404)."""
    before = httpx.get(odd.url + "/admin/experts", headers=_admin()).json()
    for name, code in (("a\nb", "000A"), ("a\tb", "0009"), ("a\x7fb", "007F"),
                       ("a\x85b", "0085")):
        r = httpx.post(odd.url + "/admin/experts", headers=_admin(),
                       data={"url": "http://127.0.0.1:9/v1", "name": name},
                       files={"stats": ("law.stats", b"unread")})
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["message"] == \
            f"invalid expert name {name!r}: it holds a control character (U+{code})"
        assert r.json()["error"]["param"] == "name"
    for name, problem in (("a\u200bb", "holds an invisible format character (U+200B)"),
                          ("cafe\u0301", "is not in Unicode's composed form (NFC): write it "
                                         "as 'café'")):
        r = httpx.post(odd.url + "/admin/experts", headers=_admin(),
                       data={"url": "http://127.0.0.1:9/v1", "name": name},
                       files={"stats": ("law.stats", b"unread")})
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["message"] == f"invalid expert name {name!r}: it {problem}"
    assert httpx.get(odd.url + "/admin/experts", headers=_admin()).json() == before


def test_saved_expert_name_with_a_control_character_is_named(stats_files, upstreams,
                                                            tmp_path) -> None:
    """An expert named with a newline that an older ir3de's admin API saved: the restart
    names the state folder it comes from."""
    from dataclasses import replace

    from ir3de.errors import IR3DEError
    from ir3de.serve import _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    state, base = _initial_state(load_config(config))
    _persist(replace(state, experts={**state.experts, "a\nb": state.experts["math"]}),
             str(tmp_path / "state"), base)
    with pytest.raises(IR3DEError) as caught:
        _initial_state(load_config(config))
    assert str(caught.value) == (
        "invalid expert name 'a\\nb': it holds a control character (U+000A) (an expert the "
        f"admin API saved in {tmp_path / 'state'}); move {tmp_path / 'state'} away to start "
        "from the config")


def test_every_request_is_logged_and_admin_refusals_counted(odd: Proc) -> None:
    """Admin requests (their 401s included), /v1/models and unknown routes left no
    access-log line; refused admin tokens were counted nowhere."""
    before = len(_request_log(odd))
    for method, path, headers, status in (
            ("GET", "/admin/experts", {}, 401),
            ("GET", "/admin/experts", _admin("wrong-token-123"), 401),
            ("DELETE", "/admin/experts/math", {"authorization": f"Basic {TOKEN}"}, 401),
            ("GET", "/admin/experts", _admin(), 200),
            ("DELETE", "/admin/experts/nobody", _admin(), 404),
            ("GET", "/v1/models", {}, 200),
            ("GET", "/v1/models/nobody", {}, 404),
            ("GET", "/nowhere", {}, 404)):
        assert httpx.request(method, odd.url + path, headers=headers).status_code == status
    lines = _request_log(odd)[before:]
    assert [(e["path"], e["method"], e["status"], e.get("refused")) for e in lines] == [
        ("/admin/experts", "GET", 401, "missing"),
        ("/admin/experts", "GET", 401, "invalid"),
        ("/admin/experts/math", "DELETE", 401, "malformed"),
        ("/admin/experts", "GET", 200, None),
        ("/admin/experts/nobody", "DELETE", 404, None),
        ("/models", "GET", 200, None),
        ("/models/nobody", "GET", 404, None),
        ("/nowhere", "GET", 404, None)]
    metrics = _metrics(odd)
    for reason in ("missing", "invalid", "malformed"):
        assert metrics[f'ir3de_admin_unauthorized_total{{reason="{reason}"}}'] >= 1
    log = os.pread(odd.log.fileno(), 1 << 22, 0).decode()
    assert "wrong-token-123" not in log and TOKEN not in log


def test_admin_may_send_only_the_key_variables_the_config_names(
        stats_files, upstreams, tmp_path, monkeypatch) -> None:
    """POST /admin/experts with api_key_env=IR3DE_API_KEYS (or any variable) sent its
    value, the client keys, to whatever URL the admin gave: holding the admin token
    revealed every secret of the gateway's environment."""
    from ir3de.errors import IR3DEError
    from ir3de.serve import _initial_state, load_config

    config = _with_experts(
        _config(tmp_path, stats_files, upstreams, api_keys_env=KEYS_ENV,
                admin_key_envs=["IR3DE_TEST_SPARE_KEY"]),
        coding={"api_key_env": "IR3DE_TEST_CODER_KEY"})
    gw = _gateway(config, env={KEYS_ENV: "client-key", "IR3DE_TEST_CODER_KEY": "coder-key",
                               "IR3DE_TEST_SPARE_KEY": "spare-key",
                               "IR3DE_TEST_OTHER_SECRET": "other"})
    law = {"stats": ("law.stats", stats_files["law"].read_bytes())}
    try:
        for env in ("IR3DE_TEST_OTHER_SECRET", KEYS_ENV, "IR3DE_ADMIN_TOKEN",
                    "IR3DE_TEST_UNSET_KEY"):  # (not "is not set": nothing told of it)
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(), files=law,
                           data={"url": upstreams["law"].url + "/v1", "api_key_env": env})
            assert r.status_code == 400, (env, r.text)
            assert r.json()["error"] == {
                "message": f"api_key_env: {env} is not allowed: the admin API may only name "
                           "a variable that gateway.yaml names as an expert's api_key_env or "
                           "lists under admin_key_envs (IR3DE_TEST_CODER_KEY, "
                           "IR3DE_TEST_SPARE_KEY)",
                "type": "invalid_request_error", "param": "api_key_env", "code": None}
        for env, key in (("IR3DE_TEST_SPARE_KEY", "spare-key"),
                         ("IR3DE_TEST_CODER_KEY", "coder-key")):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(), files=law,
                           data={"url": upstreams["law"].url + "/v1", "api_key_env": env})
            assert r.status_code == 200, r.text
            r = httpx.post(gw.url + "/v1/completions", headers=_bearer("client-key"),
                           json={"model": "law", "prompt": LEGAL})
            assert r.json()["auth"] == f"Bearer {key}"
            assert httpx.delete(gw.url + "/admin/experts/law", headers=_admin()
                                ).status_code == 200
        r = httpx.post(gw.url + "/admin/experts", headers=_admin(), files=law,
                       data={"url": upstreams["law"].url + "/v1",
                             "api_key_env": "IR3DE_TEST_SPARE_KEY"})
        assert r.status_code == 200, r.text
    finally:
        gw.stop()
    # gateway.yaml no longer allows the variable the admin API saved: not sent on
    data = yaml.safe_load(config.read_text())
    del data["admin_key_envs"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("IR3DE_TEST_CODER_KEY", "coder-key")
    with pytest.raises(IR3DEError) as caught:
        _initial_state(load_config(config))
    assert str(caught.value).startswith(
        f"experts.law.api_key_env: IR3DE_TEST_SPARE_KEY, saved by the admin API in "
        f"{tmp_path / 'state'}, is not allowed: the admin API may only name a variable")


def test_saved_min_coverage_yields_to_a_router_without_coverage(
        stats_files, upstreams, tmp_path, caplog) -> None:
    """A min_coverage set through the admin API, then a preset without pairs edited into
    gateway.yaml: the restart failed with "min_coverage needs a router whose decisions
    report coverage", naming neither the saved state nor a way out. The edit wins, as edits
    of the file do in the merge: the saved value goes, with a warning. A min_coverage that
    gateway.yaml sets itself on such a router stays an error, naming the saved state."""
    import logging
    from dataclasses import replace

    from ir3de.errors import IR3DEError
    from ir3de.serve import _copy_router, _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    state, base = _initial_state(load_config(config))
    _persist(replace(state, min_coverage=0.1), str(tmp_path / "state"), base)  # PATCHed
    data = yaml.safe_load(config.read_text())
    data["router"]["preset"] = "unigram"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert state.min_coverage == 0.0 and not state.router.reports_coverage
    lines = {e["field"]: e for e in map(json.loads, (r.getMessage() for r in caplog.records))}
    assert lines["min_coverage"]["using"] == "config"
    assert lines["min_coverage"]["message"] == (
        "min_coverage: using gateway.yaml's 0.0, not the saved state's 0.1 (the saved value "
        "needs a router whose decisions report coverage, and the router in use (rebuilt from "
        "gateway.yaml's changed router section) reports none)")

    del data["router"]["preset"]  # the admin API turned the selector off the pairs ...
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state, base = _initial_state(load_config(config))
    router = _copy_router(state.router)
    router.set_params(selector="avg")
    _persist(replace(state, router=router, min_coverage=0.0), str(tmp_path / "state"), base)
    data["min_coverage"] = 0.2  # ... and gateway.yaml sets a cut since
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(IR3DEError) as caught:
        _initial_state(load_config(config))
    assert str(caught.value) == (
        "gateway.yaml's min_coverage 0.2: min_coverage needs a router whose decisions report "
        "coverage: the 'geo' selector on a token-pair table (the default preset); the router "
        f"in use (gateway.yaml's, with the admin API's changes saved in {tmp_path / 'state'}: "
        "selector 'avg') reports none: set min_coverage to 0 in gateway.yaml, or move "
        f"{tmp_path / 'state'} away to start from the config alone")


def test_router_settings_in_gateway_yaml(stats_files, upstreams, tmp_path, emb: Embedder,
                                         caplog) -> None:
    """gateway.yaml's router could only name a preset, so a router fitted there from
    statistics could not take the README's advice for few fit prompts (then pair mass 1e4).
    ``router.settings`` applies settings over the preset (stats) or the saved router
    (path); an edit of them rebuilds the router on restart, and a section without them is
    the one states were saved with before, so those are not rebuilt."""
    import logging

    from ir3de import RouterConfig
    from ir3de.errors import IR3DEError
    from ir3de.serve import _initial_state, _persist, _router_source, load_config

    prompts = [MATH, CODE, LEGAL, "Sort a list of numbers", "How many apples are left?"]
    stats = [DomainStats.load(stats_files[d]) for d in ("math", "coding")]

    def scores(pairs: float) -> list:
        return Router(emb, RouterConfig(pairs=pairs)).fit_stats(stats).predict_proba(
            prompts).tolist()

    config = _config(tmp_path, stats_files, upstreams)
    assert set(_router_source(load_config(config))["section"]) == {
        "path", "stats", "embedder", "preset"}  # as saved before settings existed
    data = yaml.safe_load(config.read_text())
    # PyYAML reads 1e4 as text: taken as the number, as --pairs 1e4 is; auto as --alpha auto
    config.write_text(yaml.safe_dump(data, sort_keys=False).replace(
        "  stats:", "  settings: {pairs: 1e4, alpha: auto}\n  stats:", 1))
    state, base = _initial_state(load_config(config))
    assert state.router.config == RouterConfig(pairs=1e4, max_tokens=1024)  # (as counted)
    assert state.router.predict_proba(prompts).tolist() == scores(1e4) != scores(1e5)
    _persist(state, str(tmp_path / "state"), base)

    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))  # unchanged: the saved router
    assert state.router.config.pairs == 1e4 and not caplog.records
    data["router"]["settings"] = {"pairs": 3e4}  # edited since: rebuilt with it
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, base = _initial_state(load_config(config))
    assert state.router.predict_proba(prompts).tolist() == scores(3e4)
    lines = {e["field"]: e for e in map(json.loads, (r.getMessage() for r in caplog.records))}
    assert lines["router"]["using"] == "config" and "router.pairs" in lines
    _persist(state, str(tmp_path / "state"), base)
    del data["router"]["settings"]  # removed: the preset's own mass again
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state, _ = _initial_state(load_config(config))
    assert state.router.predict_proba(prompts).tolist() == scores(1e5)

    # over a saved router's settings; one it would not read is refused at start
    saved = tmp_path / "router.safetensors"
    Router(emb).fit_stats(stats).save(saved)
    data = {**data, "router": {"path": str(saved), "settings": {"pairs": 1e4}}}
    del data["state_dir"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state, _ = _initial_state(load_config(config))
    assert state.router.predict_proba(prompts).tolist() == scores(1e4)
    data["router"]["settings"] = {"k": 5}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(IR3DEError) as caught:
        _initial_state(load_config(config))
    assert str(caught.value) == ("router.settings.k applies to selector topk only; the saved "
                                 "router gives selector geo")


def test_a_value_the_file_does_not_set_is_not_called_edited(stats_files, upstreams, tmp_path,
                                                            caplog) -> None:
    """A router value gateway.yaml does not name changes with the router it describes (a
    state saved when routers read 1,024 tokens, their statistics counted 64): its warning
    said "edited in gateway.yaml", which the operator had not."""
    import logging

    from ir3de.serve import _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    data = yaml.safe_load(config.read_text())
    data["router"]["settings"] = {"max_tokens": 512, "pairs": 1e4}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state, base = _initial_state(load_config(config))
    assert state.router.max_tokens == 512
    _persist(state, str(tmp_path / "state"), base)
    data["router"]["settings"] = {"pairs": 3e4}  # the cap taken out, the mass edited
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert state.router.max_tokens == 1024 and state.router.config.pairs == 3e4
    lines = {e["field"]: e["message"]
             for e in map(json.loads, (r.getMessage() for r in caplog.records))}
    assert lines["router.pairs"].endswith(
        "(edited in gateway.yaml since the gateway last started)"), lines
    assert lines["router.max_tokens"] == (
        "router.max_tokens: using gateway.yaml's 1024, not the saved state's 512 (gateway.yaml "
        "does not set it, and the router it describes gives it now: its preset, its "
        "statistics files or ir3de's defaults changed, or the setting was taken out of the "
        "file, since the gateway last started)"), lines
    # the spelling forms enter as one: the file's spelling brings its prior with it, as an
    # edit (it said the router "gives it now")
    state.router.set_params(spelling=None, spelling_prior=5.0)  # as PATCH /admin/settings
    _persist(state, str(tmp_path / "state"), _initial_state(load_config(config))[1])
    data["router"]["settings"] = {"pairs": 3e4, "spelling": 0.5}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert (state.router.config.spelling, state.router.config.spelling_prior) == (0.5, None)
    lines = {e["field"]: e["message"]
             for e in map(json.loads, (r.getMessage() for r in caplog.records))}
    assert lines["router.spelling_prior"].endswith(
        "(edited in gateway.yaml since the gateway last started)"), lines


# ----------------------------------------------------------------- config and saved state
# A restart merges the saved state with gateway.yaml: what the file changed since wins, the
# admin API's changes otherwise stay; each disagreement is a warning line.


def _disagreements(proc: Proc) -> list[tuple[str, str]]:
    return [(e["field"], e["using"]) for e in _log_events(proc)
            if e["event"] == "config_vs_state"]


def test_config_edits_take_effect_and_admin_changes_survive_restarts(
        stats_files, upstreams, tmp_path) -> None:
    """Once state_dir existed, edits to gateway.yaml (an expert's URL, min_coverage) were
    ignored on restart without a word. /v1/models' created changed on every call."""
    config = _config(tmp_path, stats_files, upstreams)
    gw = _gateway(config)
    try:
        start = time.monotonic()
        created = {m["id"]: m["created"] for m in httpx.get(gw.url + "/v1/models").json()["data"]}
        assert httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                           json={"threshold": 0.3}).status_code == 200
        assert httpx.post(gw.url + "/admin/experts", headers=_admin(),
                          data={"url": upstreams["law"].url + "/v1"},
                          files={"stats": ("law.stats", stats_files["law"].read_bytes())}
                          ).status_code == 200
        time.sleep(max(0.0, 1.1 - (time.monotonic() - start)))
        now = {m["id"]: m["created"] for m in httpx.get(gw.url + "/v1/models").json()["data"]}
        assert now == {**created, "law": now["law"]} and now["law"] >= created["math"]
        assert _disagreements(gw) == []
    finally:
        gw.stop()
    data = yaml.safe_load(config.read_text())
    data["experts"]["coding"].update(url=upstreams["law"].url + "/v1", timeout=7)
    data["min_coverage"] = 0.01
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    gw = _gateway(config)
    try:
        listed = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
        urls = {e["name"]: e["url"] for e in listed["experts"]}
        assert urls == {"math": upstreams["math"].url + "/v1",
                        "coding": upstreams["law"].url + "/v1",  # the file's edit
                        "law": upstreams["law"].url + "/v1"}  # the admin API's
        assert (listed["threshold"], listed["min_coverage"]) == (0.3, 0.01)
        saved = json.loads((tmp_path / "state" / "experts.json").read_text())
        assert saved["experts"]["coding"]["timeout"] == 7.0
        r = httpx.post(gw.url + "/v1/completions", json={"model": "coding", "prompt": CODE})
        assert r.json()["choices"][0]["text"] == "answer from law to model coding"
        assert sorted(_disagreements(gw)) == [
            ("experts.coding.timeout", "config"), ("experts.coding.url", "config"),
            ("min_coverage", "config"), ("threshold", "saved")]
        threshold = next(e for e in _log_events(gw) if e.get("field") == "threshold")
        assert (threshold["config"], threshold["saved"]) == (0.0, 0.3)
        assert threshold["message"].startswith("threshold: using the saved state's 0.3, not "
                                               "gateway.yaml's 0.0 (saved by the admin API")
        assert f"removing {tmp_path / 'state'} starts from gateway.yaml alone" in \
            threshold["message"]
    finally:
        gw.stop()
    gw = _gateway(config)  # nothing edited since: the admin API's threshold alone differs
    try:
        assert _disagreements(gw) == [("threshold", "saved")]
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json()["threshold"] == 0.3
    finally:
        gw.stop()


def test_changed_config_router_is_rebuilt_with_the_admin_changes(
        stats_files, upstreams, tmp_path, caplog) -> None:
    """The router in gateway.yaml changed since the state was saved: it is rebuilt from the
    file, and the experts the admin API added and the settings it changed are applied to it
    again. A state folder from before gateway.yaml's values were saved beside it keeps its
    values, with warnings, and has them from then on."""
    import logging
    from dataclasses import replace

    from ir3de.serve import _copy_router, _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    state, base = _initial_state(load_config(config))
    router = _copy_router(state.router)  # what the admin API would have saved
    router.add_expert("law", DomainStats.load(stats_files["law"]))
    router.set_params(alpha=0.5)
    law = state.experts["coding"].model_copy(update={"url": upstreams["law"].url + "/v1"})
    _persist(replace(state, router=router, experts={**state.experts, "law": law}),
             str(tmp_path / "state"), base)
    data = yaml.safe_load(config.read_text())  # gateway.yaml drops coding
    data["router"]["stats"] = [str(stats_files["math"])]
    del data["experts"]["coding"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert state.router.experts == ["math", "law"] and list(state.experts) == ["math", "law"]
    assert state.router.config.alpha == 0.5
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(e["field"], e["using"]) for e in lines] == [
        ("router", "config"), ("router.alpha", "saved"), ("experts.coding", "config")]
    assert lines[2]["message"] == "experts.coding: dropped, as gateway.yaml no longer lists " \
                                  "it (edited since the gateway last started)"

    saved_file = tmp_path / "state" / "experts.json"  # as an older ir3de wrote it
    saved = json.loads(saved_file.read_text())
    del saved["config"]
    saved_file.write_text(json.dumps(saved))
    data["threshold"] = 0.2
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert state.threshold == 0.0 and state.router.experts == ["math", "law"]
    assert [(json.loads(r.getMessage())["field"], json.loads(r.getMessage())["using"])
            for r in caplog.records] == [("router.alpha", "saved"), ("threshold", "saved")]
    assert json.loads(saved_file.read_text())["config"]["threshold"] == 0.2


def test_the_two_spelling_forms_merge_as_one(stats_files, upstreams, tmp_path,
                                             caplog) -> None:
    """The admin API put the spelling back-off in as a prior; gateway.yaml then set the
    added term: merged key by key, the restart paired the file's term with the saved prior,
    a router that is refused, and the gateway would not start. A change of either form in
    the file takes both from it; a change elsewhere keeps the admin API's prior."""
    import logging
    from dataclasses import replace

    from ir3de.serve import _copy_router, _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    state, base = _initial_state(load_config(config))
    router = _copy_router(state.router)  # what the admin API would have saved
    router.set_params(spelling=None, spelling_prior=1e5)
    _persist(replace(state, router=router), str(tmp_path / "state"), base)
    data = yaml.safe_load(config.read_text())
    data["router"]["settings"] = {"alpha": 0.05}  # a change elsewhere: the prior stays
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state, _ = _initial_state(load_config(config))
    c = state.router.config
    assert (c.alpha, c.spelling, c.spelling_prior) == (0.05, None, 1e5)
    data["router"]["settings"] = {"spelling": 0.5}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    c = state.router.config
    assert (c.alpha, c.spelling, c.spelling_prior) == ("auto", 0.5, None)
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(e["field"], e["using"]) for e in lines] == [
        ("router", "config"), ("router.alpha", "config"),  # (the first restart saved 0.05)
        ("router.spelling", "config"), ("router.spelling_prior", "config")]


def test_an_expert_the_admin_api_replaced_keeps_its_statistics_over_a_rebuild(
        stats_files, upstreams, tmp_path, caplog) -> None:
    """The admin API replaced coding (DELETE, then POST under its name with other
    statistics and URL); an unrelated edit of the router section then rebuilt the router
    with gateway.yaml's coding statistics, sent to the admin API's endpoint, without a
    word. The replacement stays while the file is unchanged; a changed file wins, said."""
    import logging
    import shutil
    from dataclasses import replace

    from ir3de.serve import _copy_router, _initial_state, _persist, load_config

    files = {name: tmp_path / f"{name}.stats" for name in ("math", "coding")}
    for name, path in files.items():
        shutil.copy(stats_files[name], path)
    config = _config(tmp_path, files, upstreams)
    state, base = _initial_state(load_config(config))
    law = DomainStats.load(stats_files["law"])
    router = _copy_router(state.router)  # what the admin API would have saved
    router.remove_expert("coding")
    router.add_expert("coding", law)
    _persist(replace(state, router=router), str(tmp_path / "state"), base)
    data = yaml.safe_load(config.read_text())
    data["router"]["settings"] = {"alpha": 0.05}  # unrelated: the router is rebuilt
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert state.router.stats["coding"].n_tokens == law.n_tokens
    assert state.router.config.alpha == 0.05
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(e["field"], e["using"]) for e in lines] == [
        ("router", "config"), ("router.experts.coding", "saved"), ("router.alpha", "config")]
    assert lines[1]["message"] == (
        "router.experts.coding: using the statistics the admin API replaced 'coding''s with, "
        "not gateway.yaml's, whose file is unchanged since the gateway last started")
    # the file itself changed since (counted again, here from another corpus under the
    # same domain): the file's statistics win, and that is said
    shutil.copy(stats_files["math"], files["math"])  # (unchanged)
    recounted = DomainStats.load(stats_files["coding"]) + DomainStats.load(
        stats_files["law"]).renamed("coding")
    recounted.save(files["coding"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert state.router.stats["coding"].source == str(files["coding"])
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert ("router.experts.coding", "config") in [(e["field"], e["using"]) for e in lines]
    assert "gateway.yaml's statistics file changed since the gateway last started" in \
        next(e["message"] for e in lines if e["field"] == "router.experts.coding")


def test_an_endpoint_the_admin_api_removed_comes_back_with_its_expert(
        stats_files, upstreams, tmp_path, caplog) -> None:
    """An endpoint the router did not route (law) was removed through the admin API;
    gateway.yaml then added law's statistics to its router. The router merge took the
    file's expert, the endpoint merge kept the endpoint removed, and the gateway would not
    start ("router experts ['law'] have no endpoint"): the endpoint follows the expert."""
    import logging
    from dataclasses import replace

    from ir3de.serve import _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    data = yaml.safe_load(config.read_text())
    data["experts"]["law"] = {"url": upstreams["law"].url + "/v1"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state, base = _initial_state(load_config(config))
    assert "law" in state.experts and "law" not in state.router.experts
    _persist(replace(state, experts={n: e for n, e in state.experts.items() if n != "law"}),
             str(tmp_path / "state"), base)
    data["router"]["stats"].append(str(stats_files["law"]))
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert state.router.experts == ["math", "coding", "law"] and "law" in state.experts
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(e["field"], e["using"]) for e in lines] == [("router", "config"),
                                                         ("experts.law", "config")]
    assert lines[1]["message"] == ("experts.law: restored from gateway.yaml, though removed "
                                   "through the admin API: gateway.yaml's router has the "
                                   "expert again")


def test_an_admin_added_experts_endpoint_outlives_a_config_override(
        stats_files, upstreams, tmp_path, caplog) -> None:
    """The admin API added law; gateway.yaml then overrode its endpoint (a timeout), and
    later dropped the override: the endpoint merge dropped law's endpoint while the router
    kept routing to it, and the gateway would not start."""
    import logging
    from dataclasses import replace

    from ir3de.serve import _copy_router, _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    state, base = _initial_state(load_config(config))
    router = _copy_router(state.router)  # what the admin API would have saved
    router.add_expert("law", DomainStats.load(stats_files["law"]))
    law = state.experts["coding"].model_copy(update={"url": upstreams["law"].url + "/v1"})
    _persist(replace(state, router=router, experts={**state.experts, "law": law}),
             str(tmp_path / "state"), base)
    data = yaml.safe_load(config.read_text())
    data["experts"]["law"] = {"url": upstreams["law"].url + "/v1", "timeout": 20}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state, _ = _initial_state(load_config(config))  # (a restart: saved with its base)
    assert state.experts["law"].timeout == 20
    del data["experts"]["law"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert "law" in state.router.experts and "law" in state.experts
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert ("experts.law", "saved") in [(e["field"], e["using"]) for e in lines]


def test_a_setting_edited_in_that_the_saved_settings_leave_unread_is_said(
        stats_files, upstreams, tmp_path, caplog) -> None:
    """The admin API set selector topk; gateway.yaml then set pairs, which only geo reads:
    the restart kept topk and dropped the edit without a word (the same file is refused
    without the state, and the same PATCH is a 400). The gateway starts, and says so."""
    import logging
    from dataclasses import replace

    from ir3de.serve import _copy_router, _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    state, base = _initial_state(load_config(config))
    router = _copy_router(state.router)  # what the admin API would have saved
    router.set_params(selector="topk", k=1)
    _persist(replace(state, router=router), str(tmp_path / "state"), base)
    data = yaml.safe_load(config.read_text())
    data["router"]["settings"] = {"pairs": 1e4}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="ir3de.access"):
        state, _ = _initial_state(load_config(config))
    assert (state.router.config.selector, state.router.config.pairs) == ("topk", 1e4)
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(e["field"], e["using"]) for e in lines] == [
        ("router", "config"), ("router.pairs", "saved"), ("router.k", "saved"),
        ("router.selector", "saved")]
    assert lines[1]["message"] == (
        f"router.settings.pairs applies to selector geo only; the admin API's change saved "
        f"in {tmp_path / 'state'} gives selector topk: gateway.yaml's value changes nothing "
        f"until PATCH /admin/settings sets selector geo (removing {tmp_path / 'state'} starts "
        "from gateway.yaml alone)")


def test_no_warning_for_saved_settings_the_router_does_not_read(
        stats_files, upstreams, tmp_path, caplog) -> None:
    """A saved k that differs from gateway.yaml's was warned about at startup though the
    geo selector does not read k; settings that matter still are, in both merges."""
    import logging
    from dataclasses import replace

    from ir3de.serve import _copy_router, _initial_state, _persist, load_config

    config = _config(tmp_path, stats_files, upstreams)
    state, base = _initial_state(load_config(config))

    def disagreements(**settings) -> list[tuple[str, str]]:
        router = _copy_router(state.router)  # what the admin API would have saved
        router.set_params(**settings)
        _persist(replace(state, router=router), str(tmp_path / "state"), base)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ir3de.access"):
            _initial_state(load_config(config))
        lines = [json.loads(r.getMessage()) for r in caplog.records]
        return [(e["field"], e["using"]) for e in lines]

    assert disagreements(k=7) == []  # selector geo: k is not read
    assert disagreements(k=7, lam=2.0, alpha=0.5) == [("router.alpha", "saved")]
    assert disagreements(k=7, selector="topk") == [("router.k", "saved"),
                                                   ("router.selector", "saved")]
    data = yaml.safe_load(config.read_text())  # gateway.yaml's router changes: rebuilt
    data["router"]["stats"] = [*data["router"]["stats"], str(stats_files["law"])]
    data["experts"]["law"] = {"url": upstreams["law"].url + "/v1"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    assert disagreements(k=7, lam=2.0) == [("router", "config")]
    assert disagreements(k=7, alpha=0.5) == [("router", "config"), ("router.alpha", "saved")]


@pytest.mark.parametrize(("value", "problem"), [
    (None, "is not set"), ("", "is empty"), (" ", "is empty"),
    ("my key", "holds a space or a character outside printable ASCII")])
def test_expert_api_key_env_without_a_key_refuses_to_start(
        value: str | None, problem: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """An expert's api_key_env naming an unset variable was ignored: the expert got no key.
    Now a config error, found before the router loads (this router file does not exist)."""
    env = "IR3DE_TEST_EXPERT_KEY"
    if value is None:
        monkeypatch.delenv(env, raising=False)
    else:
        monkeypatch.setenv(env, value)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"router": {"path": "missing.safetensors"}, "experts": {
        "a": {"url": "http://127.0.0.1:9/v1", "api_key_env": env}}}))
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ir3de: error: experts.a.api_key_env: the environment variable "
                          f"{env} {problem}"), err
    assert "my key" not in err


def test_broken_yaml_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    """Broken YAML printed PyYAML's multi-line message naming "<unicode string>"."""
    path = tmp_path / "gateway.yaml"
    path.write_text("name: ir3de\nrouter: {path: r.safetensors\nexperts:\n  a: {url: x}\n")
    assert main(["serve", "--config", str(path)]) == 1
    assert capsys.readouterr().err == \
        f"ir3de: error: {path}:3:8: not valid YAML: expected ',' or '}}', but got ':' " \
        "(while parsing a flow mapping)\n"


def test_serve_refuses_a_port_in_use_and_serves_a_free_one(stats_files, upstreams,
                                                          tmp_path) -> None:
    """A port in use: uvicorn logged "startup complete", then [Errno 98], and exited with 3.
    serve() (what `ir3de serve` runs) binds it before starting uvicorn: one line."""
    from ir3de.errors import IR3DEError
    from ir3de.serve import serve

    config = _config(tmp_path, stats_files, upstreams)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(IR3DEError) as caught:
            serve(config, host="127.0.0.1", port=port)
    assert str(caught.value) == f"127.0.0.1:{port}: address already in use"
    # checked before the state is read and saved: a start that failed on its port had
    # saved gateway.yaml merged into the state (an edit reverted since then counted)
    from dataclasses import replace

    from ir3de.serve import _initial_state, _persist, load_config

    state, base = _initial_state(load_config(config))
    _persist(replace(state, threshold=0.4), str(tmp_path / "state"), base)  # an admin change
    saved = {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()}
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "threshold": 0.25}, sort_keys=False))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(IR3DEError, match="address already in use"):
            serve(config, host="127.0.0.1", port=busy.getsockname()[1])
    assert {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()} == saved
    config.write_text(yaml.safe_dump(data, sort_keys=False))  # (the edit reverted)
    code = "import sys; from ir3de.serve import serve; " \
           "serve(sys.argv[1], port=int(sys.argv[2]), log_level='info')"
    gw = Proc([sys.executable, "-c", code, str(config), "{port}"], "/healthz")
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH))
        assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "math"
        assert [e["expert"] for e in _access_log(gw)] == ["math"]
    finally:
        gw.stop()


def test_a_request_head_not_sent_within_keep_alive_seconds_closes_the_connection(
        stats_files, upstreams, tmp_path: Path) -> None:
    """uvicorn timed a connection out only after a response: one that sent nothing, or
    trickled its head a byte at a time, stayed open for ever (a thousand of them held every
    file descriptor of a default ulimit). The head now has keep_alive_seconds, from when the
    connection opens or the last response ended; a request that takes longer to answer is
    not cut."""
    gw = _gateway(_config(tmp_path, stats_files, upstreams, keep_alive_seconds=1))
    host, port = "127.0.0.1", int(gw.url.rsplit(":", 1)[1])

    def closed_after(trickle: bytes) -> float:
        start = time.monotonic()
        with socket.create_connection((host, port), timeout=10) as sock:
            try:
                for byte in trickle:  # one byte every 0.2 s: each resets no timer
                    sock.sendall(bytes([byte]))
                    time.sleep(0.2)
                assert sock.recv(1024) == b""  # closed by the gateway, no answer
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while the head was still trickling in
        return time.monotonic() - start

    try:
        assert closed_after(b"") < 3
        assert closed_after(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1") < 3
        # A complete head in time is answered, and the next one has its own deadline.
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(1024)
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += sock.recv(1024)
            start = time.monotonic()
            assert sock.recv(1024) == b""
            assert time.monotonic() - start < 3
        # An answer slower than keep_alive_seconds is not cut.
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                       json=_chat(MATH, model="math", hang=2))
        assert r.status_code == 200, r.text
        # A body has keep_alive_seconds for each next piece: one that never came held its
        # connection for ever (and the gateway's stop); a slow one that keeps coming is read.
        body = json.dumps(_chat(MATH)).encode()
        start = time.monotonic()
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
                         % len(body) + body[:1])
            assert sock.recv(1024) == b""  # closed, no answer (logged as a 499)
        assert time.monotonic() - start < 3
        assert _wait_for(lambda: _access_log(gw)[-1]["status"] == 499)
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
                         % len(body))
            for i in range(0, len(body), len(body) // 4 + 1):  # 0.6 s apart: 2.4 s in all
                time.sleep(0.6)
                sock.sendall(body[i:i + len(body) // 4 + 1])
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        gw.stop()


def test_a_stream_its_client_stopped_reading_is_cut(stats_files, upstreams, tmp_path: Path
                                                    ) -> None:
    """A client that stopped reading a stream held the expert's generation and a pooled
    upstream connection for ever (back-pressure, with no deadline on the client): with
    max_connections of them every other request got a 503. Now the connection is dropped
    once the client has taken nothing for keep_alive_seconds, and the expert let go."""
    gw = _gateway(_config(tmp_path, stats_files, upstreams, keep_alive_seconds=1))
    tag = f"unread-{time.monotonic_ns()}"
    body = json.dumps(_chat(MATH, stream=True, chunks=100, tag=tag, pad=4_000_000)).encode()
    state = upstreams["math"].url + f"/streams/{tag}"
    try:
        with socket.socket() as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up at once
            raw.connect(("127.0.0.1", gw.port))
            raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                        b"content-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n" % len(body) + body)
            assert _wait_for(lambda: httpx.get(state).json()["state"] == "open")
            start = time.monotonic()
            # never read: the expert is let go all the same (100 chunks take 20 s)
            assert _wait_for(lambda: httpx.get(state).json()["state"] == "disconnected", 6)
            assert time.monotonic() - start < 6
        assert _wait_for(lambda: "ir3de_in_flight 0.0" in httpx.get(gw.url + "/metrics").text)
        assert _wait_for(lambda: _access_log(gw)[-1]["complete"] is False)
        # A client still reading is not cut, however long the whole answer takes: 6 MB at
        # 1.5 MB/s (4 s, keep_alive_seconds 1) used to be dropped after a third, as the
        # buffer stays full until nearly all of it is read.
        whole = json.dumps(_chat(MATH, model="math", pad=6_000_000)).encode()
        with socket.socket() as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            raw.settimeout(10)
            raw.connect(("127.0.0.1", gw.port))
            raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                        b"content-type: application/json\r\nconnection: close\r\n"
                        b"content-length: %d\r\n\r\n" % len(whole) + whole)
            received = 0
            start = time.monotonic()
            while chunk := raw.recv(65536):
                received += len(chunk)
                time.sleep(max(0.0, received / 1.5e6 - (time.monotonic() - start)))
        assert received > 6_000_000 and time.monotonic() - start > 3
    finally:
        gw.stop()


def test_shutdown_seconds_bounds_how_long_a_stop_waits(stats_files, upstreams,
                                                       tmp_path: Path) -> None:
    """On SIGTERM the gateway stops taking connections and lets requests in flight finish;
    shutdown_seconds caps that wait (without it, a 20 s answer holds the stop 20 s). What
    it cuts is told so: a 503 to send again, or an error event ending the stream (the
    connection was closed: a stream that just ends is a whole answer to OpenAI's SDKs)."""
    import concurrent.futures

    config = _config(tmp_path, stats_files, upstreams, {"math": 60}, shutdown_seconds=1,
                     keep_alive_seconds=2)
    proc = _gateway(config)

    def streamed() -> bytes:
        with httpx.stream("POST", proc.url + "/v1/chat/completions", timeout=30,
                          json=_chat(MATH, model="math", stream=True, chunks=200)) as r:
            return r.read()

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answer = pool.submit(httpx.post, proc.url + "/v1/chat/completions",
                                 json=_chat(MATH, model="math", hang=20), timeout=30)
            stream = pool.submit(streamed)
            time.sleep(1.0)  # both in flight: one hanging upstream, one streaming
            start = time.monotonic()
            proc.proc.terminate()
            proc.proc.wait(10)
            assert time.monotonic() - start < 5
            r = answer.result()
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.headers["x-ir3de-expert"] == "math"
            assert r.json()["error"]["message"] == "the gateway is shutting down and cut this " \
                "request after shutdown_seconds (1 s); send it again"
            body = stream.result()
            assert body.startswith(b"data: {") and body.endswith(
                b'event: error\ndata: {"error": {"message": "the gateway is shutting down and '
                b'cut this request after shutdown_seconds (1 s)", "type": "server_error", '
                b'"param": null, "code": null}}\n\n'), body[-300:]
        lines = _access_log(proc)
        assert sorted((line["status"], line["complete"], line["expert"]) for line in lines) \
            == [(200, False, "math"), (503, True, "math")], lines
        # answered, the cancellations are not the app's failures (a traceback each)
        assert "Exception in ASGI application" not in _log_text(proc)
    finally:
        proc.stop()
    from ir3de.errors import IR3DEError
    from ir3de.serve import load_config

    for key, value, message in (("shutdown_seconds", 0, "greater than 0"),
                                ("shutdown_seconds", "yes", "valid number"),
                                ("shutdown_seconds", float("inf"), "finite number"),
                                ("keep_alive_seconds", 1.5, "valid integer")):
        with pytest.raises(IR3DEError, match=rf"{key}: Input should be .*{message}"):
            load_config(_config(tmp_path, stats_files, upstreams, **{key: value}))


def test_sighup_stops_the_gateway_as_sigterm_does(stats_files, upstreams,
                                                  tmp_path: Path) -> None:
    """SIGHUP (a closed terminal, systemd's reload) killed the gateway at once, cutting
    the requests in flight; it drains them now, as on SIGTERM."""
    import concurrent.futures

    proc = _gateway(_config(tmp_path, stats_files, upstreams))
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, proc.url + "/v1/chat/completions",
                                 json=_chat(MATH, model="math", hang=2), timeout=30)
            time.sleep(0.7)  # the request is in flight
            proc.proc.send_signal(signal.SIGHUP)
            assert answer.result().status_code == 200
            # then ends by the signal, as on SIGTERM (it exited 0, as if asked nothing)
            assert proc.proc.wait(10) == -signal.SIGHUP
    finally:
        proc.stop()


def test_trust_refuses_unsigned_statistics_at_startup_and_upload(
        stats_files, upstreams, tmp_path: Path, capsys) -> None:
    """`trust: DIR`: the gateway takes only statistics signed by a key in DIR, as `ir3de
    build --trust` does: router.stats at startup, and POST /admin/experts uploads (a 403
    that names the file and changes nothing). Before, an admin token holder could add any
    file."""
    pytest.importorskip("cryptography", reason="signing needs pip install 'ir3de[sign]'")
    from ir3de.signing import generate_key, sign

    generate_key(tmp_path / "alice.key")
    generate_key(tmp_path / "mallory.key")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "alice.pub").write_bytes((tmp_path / "alice.pub").read_bytes())
    signed = {}
    for domain in ("math", "coding", "law"):
        signed[domain] = tmp_path / f"signed-{domain}.stats"
        sign(DomainStats.load(stats_files[domain]), tmp_path / "alice.key").save(signed[domain])
    # An unsigned router.stats file stops the gateway, naming the file.
    unsigned_start = tmp_path / "unsigned"
    unsigned_start.mkdir()
    config = _config(unsigned_start, {**signed, "coding": stats_files["coding"]}, upstreams,
                     trust=str(tmp_path / "trusted"))
    assert main(["serve", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ir3de: error: {stats_files['coding']}: not signed"), err
    assert not (unsigned_start / "state").exists()
    # A trust folder without keys stops it too, even before a saved router is loaded.
    (tmp_path / "empty").mkdir()
    config = _config(unsigned_start, signed, upstreams, trust=str(tmp_path / "empty"))
    assert main(["serve", "--config", str(config)]) == 1
    assert "no *.pub trusted keys" in capsys.readouterr().err

    gw = _gateway(_config(tmp_path, signed, upstreams, trust="trusted"))  # relative path
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE))
        assert r.status_code == 200 and r.headers["x-ir3de-expert"] == "coding"
        listed = httpx.get(gw.url + "/admin/experts", headers=_admin()).json()
        sign(DomainStats.load(stats_files["law"]), tmp_path / "mallory.key").save(
            tmp_path / "mallory.stats")
        # renamed after signing: the signature is kept, and no longer matches
        dataclasses.replace(DomainStats.load(signed["law"]), domain="contracts").save(
            tmp_path / "changed.stats")
        for blob, problem in (
                (stats_files["law"].read_bytes(), "not signed"),
                ((tmp_path / "mallory.stats").read_bytes(), "signed by a key that is not trusted"),
                ((tmp_path / "changed.stats").read_bytes(),
                 "signature does not match its contents")):
            r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                           data={"url": upstreams["law"].url + "/v1"},
                           files={"stats": ("law.stats", blob)})
            assert r.status_code == 403, r.text
            error = r.json()["error"]
            assert error["message"].startswith(f"the uploaded stats file 'law.stats': {problem}")
            assert (error["code"], error["param"]) == ("untrusted_stats", "stats")
        assert httpx.get(gw.url + "/admin/experts", headers=_admin()).json() == listed
        assert not list((tmp_path / "state").iterdir())  # nothing changed, nothing saved
        # Renaming drops a signature: the restart could not check the expert again.
        r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                       data={"url": upstreams["law"].url + "/v1", "name": "contracts"},
                       files={"stats": ("law.stats", signed["law"].read_bytes())})
        assert r.status_code == 403 and "was signed as 'law'" in r.json()["error"]["message"]
        r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                       data={"url": upstreams["law"].url + "/v1"},
                       files={"stats": ("law.stats", signed["law"].read_bytes())})
        assert r.status_code == 200, r.text
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(LEGAL))
        assert r.headers["x-ir3de-expert"] == "law"
        # The saved router keeps the signatures: the restart checks them and serves it.
        gw.stop()
        gw.start()
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(LEGAL))
        assert r.headers["x-ir3de-expert"] == "law"
    finally:
        gw.stop()
    # A saved router (router.path) with an unsigned expert is refused, naming it.
    saved = tmp_path / "mixed.safetensors"
    router = Router.load(tmp_path / "state" / "router.safetensors")
    router.remove_expert("law")
    router.add_expert("unsigned", DomainStats.load(stats_files["law"])).save(saved)
    config = _config(unsigned_start, signed, upstreams, trust=str(tmp_path / "trusted"))
    settings = yaml.safe_load(config.read_text())
    settings["router"] = {"path": str(saved)}
    settings["experts"]["unsigned"] = {"url": upstreams["law"].url + "/v1"}
    config.write_text(yaml.safe_dump(settings))
    assert main(["serve", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ir3de: error: {saved}:unsigned: not signed"), err
    assert "trust takes a saved router only if every expert's statistics are signed" in err


# ----------------------------------------------------------------- a QA pass over the gateway
def test_admin_refuses_expert_urls_httpx_cannot_send_to(odd: Proc) -> None:
    """POST /admin/experts took a URL with port 99999 or 'abc', or with a space around it;
    every request to that expert was then a text/plain 500 with a traceback in the log."""
    before = httpx.get(odd.url + "/admin/experts", headers=_admin()).json()
    for url, message in (
            ("http://127.0.0.1:99999/v1", "url has an invalid port (Port out of range "
                                          "0-65535); a port is a number from 1 to 65535"),
            ("http://127.0.0.1:abc/v1", "url has an invalid port (Port could not be cast to "
                                        "integer value as 'abc')"),
            ("http://127.0.0.1:8000/v1 ", "url must not start or end with whitespace"),
            ("\thttp://127.0.0.1:8000/v1", "url must not start or end with whitespace")):
        r = httpx.post(odd.url + "/admin/experts", headers=_admin(),
                       data={"url": url, "name": "law"},
                       files={"stats": ("law.stats", b"unread")})
        assert r.status_code == 400, (url, r.text)
        error = r.json()["error"]
        assert error["message"].startswith(f"invalid expert endpoint: url: "
                                           f"{message}"), error
        assert error["param"] == "url"
    assert httpx.get(odd.url + "/admin/experts", headers=_admin()).json() == before


def test_an_unexpected_error_reaching_an_expert_is_a_502_or_the_fallback(
        stats_files, upstreams, tmp_path) -> None:
    """An exception httpx does not map to its own (here an ExceptionGroup holding an
    OverflowError: the environment's HTTP_PROXY has port 99999) was a text/plain 500 and a
    traceback. It is an upstream failure now: a 502 naming the expert, the fallback for a
    routed request, and a log line with the cause."""
    math = upstreams["math"].url.replace("127.0.0.1", "localhost")  # not proxied: NO_PROXY
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=0),
                           math={"url": math + "/v1"})
    gw = _gateway(config, env={"HTTP_PROXY": "http://127.0.0.1:99999", "NO_PROXY": "localhost"})
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE, model="coding"))
        assert r.status_code == 502, r.text
        assert r.json()["error"] == {
            "message": "expert 'coding' was not reached: sending the request failed "
                       "(OverflowError)", "type": "upstream_error", "param": None,
            "code": None}
        assert r.headers["x-ir3de-expert"] == "coding"
        r, = _routed(gw)
        assert r.status_code == 200, r.text
        assert (r.headers["x-ir3de-expert"], r.headers["x-ir3de-fallback"]) == \
            ("math", "upstream_failure")
        failures = [e for e in _log_events(gw) if e["event"] == "upstream_error"]
        assert [(e["expert"], e["error"]) for e in failures] == [("coding", "OverflowError")] * 2
        assert failures[0]["cause"].startswith("OverflowError: ")
        assert _health(gw, "coding")[1] == 2  # counted as failures, for cooldowns
        assert "Traceback" not in _log_text(gw)
    finally:
        gw.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_redirect_is_a_502_naming_its_target(gateway: Proc, upstreams: dict[str, Proc],
                                                      stream: bool) -> None:
    """An upstream 3xx (an http -> https ingress, say) reached the client with an empty
    body and no location. Not followed either: the request would go again, perhaps to
    another host."""
    https = "https://math.example/v1/chat/completions"
    for status, location, target in (
            (301, https + "?sig=s3cr3t&v=2", f"a redirect to '{https}?sig=***&v=2'"),
            (302, https, f"a redirect to '{https}'"),
            (307, https, f"a redirect to '{https}'"),
            (308, "/v2/chat/completions",  # relative: to the expert's own host
             f"a redirect to '{upstreams['math'].url}/v2/chat/completions'"),
            (300, None, "a redirection without a location")):
        headers = {"location": location} if location else {}
        for model in ("math", "ir3de"):  # routed too: the expert did answer, no fallback
            r = httpx.post(gateway.url + "/v1/chat/completions",
                           json=_chat(MATH, model=model, stream=stream, force_status=status,
                                      headers=headers))
            assert r.status_code == 502, (status, r.text)
            assert r.headers["x-ir3de-expert"] == "math"
            assert r.headers["x-should-retry"] == "false"  # an SDK tried three times
            assert "x-ir3de-fallback" not in r.headers
            assert r.json()["error"] == {
                "message": f"expert 'math' answered {status}, {target}, which the gateway "
                           "does not follow: the expert's url needs updating",
                "type": "upstream_error", "param": None, "code": None}


def _private_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for 127.0.0.1: (CA file, certificate file,
    key file), PEM, as a company's internal CA would issue for an expert's server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(timezone.utc)

    def issued(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:
        builder = x509.CertificateBuilder(
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]),
            issuer_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]),
            public_key=key.public_key(), serial_number=x509.random_serial_number(),
            not_valid_before=now, not_valid_after=now.replace(year=now.year + 1))
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                        critical=True)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False)
        if not ca:
            import ipaddress

            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    pem = serialization.Encoding.PEM
    files[0].write_bytes(issued("test CA", ca_key, "test CA", ca_key, True).public_bytes(pem))
    files[1].write_bytes(issued("127.0.0.1", key, "test CA", ca_key, False).public_bytes(pem))
    files[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


def test_tls_failure_says_why_and_ssl_cert_file_trusts_a_private_ca(
        stats_files, upstreams, tmp_path: Path, monkeypatch, capsys) -> None:
    """An expert whose certificate the gateway could not verify was "unreachable
    (ConnectError)", the cause (CERTIFICATE_VERIFY_FAILED) nowhere. SSL_CERT_FILE, as the
    README says, makes the gateway trust a private CA; one that is not there stops it at
    startup in one line (it was a traceback)."""
    pytest.importorskip("cryptography")
    ca, cert, key = _private_ca(tmp_path)
    coder = Proc([sys.executable, str(UPSTREAM), "coding", "{port}"], "/v1/models",
                 env={"UPSTREAM_TLS_CERT": str(cert), "UPSTREAM_TLS_KEY": str(key)},
                 scheme="https")
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=0),
                           coding={"url": coder.url + "/v1"})
    try:
        gw = _gateway(config)
        try:
            r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE, model="coding"))
            assert r.status_code == 502, r.text
            assert r.json()["error"]["message"] == (
                "expert 'coding' is unreachable: the TLS handshake failed, "
                "CERTIFICATE_VERIFY_FAILED (ConnectError)")
            retried, failure = [e for e in _log_events(gw) if e["event"] == "upstream_error"]
            assert (retried["retried"], failure["retried"]) == (True, False)  # (a refusal)
            assert (failure["expert"], failure["error"]) == ("coding", "ConnectError")
            assert failure["cause"].startswith("SSLCertVerificationError: [SSL: "
                                               "CERTIFICATE_VERIFY_FAILED] certificate verify "
                                               "failed: unable to get local issuer certificate")
        finally:
            gw.stop()
        gw = _gateway(config, env={"SSL_CERT_FILE": str(ca)})
        try:
            r = httpx.post(gw.url + "/v1/chat/completions", json=_chat(CODE, model="coding"))
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == \
                "answer from coding to model coding"
        finally:
            gw.stop()
    finally:
        coder.stop()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)  # (httpx reads SSL_CERT_FILE first)
    assert main(["serve", "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        "ir3de: error: cannot make the HTTP client for the experts from the environment "
        f"(SSL_CERT_FILE={tmp_path / 'missing.pem'}): FileNotFoundError: [Errno 2] No such "
        "file or directory\n")


@pytest.mark.parametrize("content", ["<s>", "</s><s>", "<unk>", "\u200b\u200b", "<s>\n",
                                     "</s> <s>"])
def test_prompt_of_special_tokens_only_goes_to_the_fallback(
        gateway: Proc, stats_files, upstreams, tmp_path, content: str) -> None:
    """A prompt of special tokens only ("<s>") was a 400 "cannot route this prompt: prompt
    #0 has no token to route on", though a fallback was configured: it has nothing to route
    on, as an image-only prompt, which already went to the fallback."""
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   json={"model": "ir3de", "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    assert (r.headers["x-ir3de-expert"], r.headers["x-ir3de-fallback"]) == ("math", "no_text")
    assert "x-ir3de-routed-to" not in r.headers and "x-ir3de-confidence" not in r.headers
    r = httpx.post(gateway.url + "/v1/completions", json={"model": "ir3de", "prompt": content})
    assert (r.status_code, r.headers["x-ir3de-fallback"]) == (200, "no_text"), r.text
    # without a fallback: the 400, worded for the client (no "prompt #0")
    gw = _gateway(_config(tmp_path, stats_files, upstreams, fallback=None))
    try:
        r = httpx.post(gw.url + "/v1/chat/completions",
                       json={"model": "ir3de", "messages": [{"role": "user", "content": content}]})
        assert r.status_code == 400, r.text
        why = "empty, or only special tokens and white space" if content != "<unk>" else \
            "the tokenizer of wordllama-l2_supercat-256 does not know its characters or " \
            "words: they become <unk>, which carries no routing signal"
        what = "text to route on" if content.startswith("\u200b") else \
            f"token to route on ({why})"
        assert r.json()["error"] == {
            "message": f"the prompt has no {what}; name an expert as "
                       "'model' or configure a fallback",
            "type": "invalid_request_error", "param": "messages", "code": None}
    finally:
        gw.stop()


def test_log_level_governs_the_access_log(stats_files, upstreams, tmp_path) -> None:
    """`ir3de serve --log-level error` still wrote an INFO access-log line per request (the
    access logger was always at INFO). It follows --log-level now: warning keeps the
    gateway's warnings (a cooldown) without the per-request lines; error silences both."""
    config = _with_experts(_config(tmp_path, stats_files, upstreams, cooldown_failures=1),
                           spare={"url": _closed_url()})
    for level, events in (("warning", {"cooldown_start", "upstream_error"}), ("error", set())):
        gw = _gateway(config, log_level=level)
        try:
            assert httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH)
                              ).status_code == 200
            assert httpx.post(gw.url + "/v1/chat/completions", json=_chat(MATH, model="spare")
                              ).status_code == 502
            assert httpx.get(gw.url + "/v1/models").status_code == 200
            assert httpx.patch(gw.url + "/admin/settings", headers=_admin(),
                               json={"alpha": 0.5}).status_code == 200
            assert _request_log(gw) == [], level
            assert {e["event"] for e in _log_events(gw)} == events, level
        finally:
            gw.stop()
    gw = _gateway(config, log_level="debug")  # as at info
    try:
        httpx.get(gw.url + "/v1/models")
        assert [(e["path"], e["status"]) for e in _request_log(gw)
                if e["path"] != "/healthz"] == [("/models", 200)]  # (/healthz: Proc's wait)
    finally:
        gw.stop()
    from ir3de.errors import IR3DEError
    from ir3de.serve import serve

    with pytest.raises(IR3DEError, match="unknown log level 'loud'; choose one of critical"):
        serve(config, log_level="loud")


def test_readme_gateway_yaml_runs_as_written(stats_files, upstreams, tmp_path: Path,
                                             emb: Embedder) -> None:
    """The README's gateway.yaml set `trust: trusted/` over a router built from unsigned
    statistics (ir3de build math.stats coding.stats): the gateway refused to start. Run
    as written, bar the experts' addresses, with its README command's environment."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    text = readme.split("```yaml\n# gateway.yaml", 1)[1].split("```", 1)[0]
    for port, name in (("8001", "math"), ("8002", "coding")):
        assert f"http://127.0.0.1:{port}/v1" in text
        text = text.replace(f"http://127.0.0.1:{port}/v1", upstreams[name].url + "/v1")
    (tmp_path / "gateway.yaml").write_text("# gateway.yaml" + text)
    Router(emb).fit_stats([DomainStats.load(stats_files[d]) for d in ("math", "coding")]
                          ).save(tmp_path / "router.safetensors")
    command = next(line for line in readme.splitlines() if line.startswith("CODER_KEY="))
    env = dict(word.split("=", 1) for word in command.split() if "=" in word)
    assert set(env) == {"CODER_KEY", "IR3DE_API_KEYS", "IR3DE_ADMIN_TOKEN"}, command
    gw = _gateway(tmp_path / "gateway.yaml", env=env)
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", headers=_bearer("key1"),
                       json={"model": "ir3de", "messages": [{"role": "user",
                                                             "content": "What is 17 * 23?"}]})
        assert r.status_code == 200, r.text
        assert r.headers["x-ir3de-expert"] in ("math", "coding")
    finally:
        gw.stop()


def test_counts_and_seconds_may_be_written_in_exponent_notation(tmp_path: Path) -> None:
    """`max_body_bytes: 1e6` and `cooldown_seconds: 1e2` were refused (PyYAML reads 1e6
    as text), while an expert's `timeout: 1e2` was taken: YAML 1.2's numbers are read as
    numbers now, and a count takes a float that is a whole number."""
    from ir3de.errors import IR3DEError
    from ir3de.serve import load_config

    path = tmp_path / "gateway.yaml"
    path.write_text("router: {path: r, settings: {pairs: 1e4}}\n"
                    "experts: {a: {url: 'http://x', timeout: 1e2}}\n"
                    "max_body_bytes: 1e6\nmax_connections: 1.0e3\ncooldown_failures: 5e0\n"
                    "cooldown_seconds: 1e2\nkeep_alive_seconds: 7.5e1\n"
                    "upstream_keep_alive_seconds: 2.5e0\nshutdown_seconds: 6E+1\n"
                    "max_answer_bytes: 1e3\n")
    config = load_config(path)
    values = {key: getattr(config, key) for key in (
        "max_body_bytes", "max_connections", "cooldown_failures", "cooldown_seconds",
        "keep_alive_seconds", "upstream_keep_alive_seconds", "shutdown_seconds",
        "max_answer_bytes", "max_admin_body_bytes")}
    assert values == {"max_body_bytes": 1_000_000, "max_answer_bytes": 1000,
                      "max_admin_body_bytes": 256 * 1024 * 1024, "max_connections": 1000,
                      "cooldown_failures": 5, "cooldown_seconds": 100.0,
                      "keep_alive_seconds": 75, "upstream_keep_alive_seconds": 2.5,
                      "shutdown_seconds": 60.0}
    assert type(config.max_body_bytes) is int and type(config.keep_alive_seconds) is int
    assert (config.experts["a"].timeout, config.router.overrides()) == (100.0, {"pairs": 1e4})
    for line, message in (("max_connections: 2.5e0", "max_connections: Input should be a "
                                                      "valid integer"),
                          ("cooldown_failures: yes", "cooldown_failures: Input should be a "
                                                     "valid integer"),
                          ("max_body_bytes: '1000'", "max_body_bytes: Input should be a "
                                                     "valid integer")):
        path.write_text(f"router: {{path: r}}\nexperts: {{a: {{url: 'http://x'}}}}\n{line}\n")
        with pytest.raises(IR3DEError, match=message):
            load_config(path)


@pytest.mark.parametrize(("name", "message"), [
    # `name=` (empty, as `-F name=$UNSET` sends it) added the expert under its statistics'
    # domain instead, without a word
    ("", "invalid expert name '': it must be non-empty, without surrounding whitespace"),
    # added, then no client could remove or look it up: they resolve the segment away
    ("..", "invalid expert name '..': clients resolve its '.' or '..' segment away in a URL "
           "path, so no request could name the expert; choose another"),
    (".", "invalid expert name '.': clients resolve its '.' or '..' segment away"),
    # as a segment too: DELETE /admin/experts/../x reached DELETE /admin/x
    ("../x", "invalid expert name '../x': clients resolve its '.' or '..' segment away"),
    ("a/./b", "invalid expert name 'a/./b': clients resolve its"),
    # a name of 150,000 characters was added, then every answer naming it was refused by
    # its clients (a 150 kB header) and no DELETE could reach it
    ("x" * 257, "invalid expert name of 257 characters: at most 256"),
    # its 4xx counts would have merged with the gateway's own
    ("(gateway)", "expert name '(gateway)' is the label of the gateway's own answers in its "
                  "metrics"),
])
def test_admin_refuses_expert_names_no_request_could_use(odd: Proc, name: str,
                                                          message: str) -> None:
    r = httpx.post(odd.url + "/admin/experts", headers=_admin(),
                   data={"url": "http://127.0.0.1:9/v1", "name": name},
                   files={"stats": ("law.stats", b"unread")})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(message)
    assert r.json()["error"]["param"] == "name"


# ----------------------------------------------------------------- answer and body sizes
ANSWER_LIMIT = 1024  # the capped gateway's max_answer_bytes


def _admin_limit(stats_files: dict[str, Path]) -> int:
    """The capped gateway's max_admin_body_bytes: the law statistics upload fits."""
    return stats_files["law"].stat().st_size + 10_000


@pytest.fixture(scope="module")
def capped(stats_files, upstreams, tmp_path_factory) -> Iterator[Proc]:
    """A gateway that holds at most ANSWER_LIMIT bytes of an expert's answer (or of one of
    its SSE events), and admin bodies a little larger than the law statistics file; its
    admin API may name SPARE_KEY as an expert's api_key_env."""
    config = _config(tmp_path_factory.mktemp("capped"), stats_files, upstreams,
                     max_answer_bytes=ANSWER_LIMIT,
                     max_admin_body_bytes=_admin_limit(stats_files),
                     admin_key_envs=["SPARE_KEY"])
    proc = _gateway(config, env={"SPARE_KEY": "sk-spare"})
    yield proc
    proc.stop()


def test_an_answer_over_max_answer_bytes_is_a_502_naming_the_limit(
        capped: Proc, upstreams: dict[str, Proc]) -> None:
    """A whole answer was read into memory whatever its size: a 4 MB gzip answer that
    decoded to 4 GB took the gateway to 12 GB. It is counted decoded and refused once past
    max_answer_bytes: a 502 naming the expert and the limit, without the fallback (the
    expert did answer) and without counting towards a cooldown."""
    small = httpx.post(upstreams["coding"].url + "/v1/completions",
                       json={"prompt": CODE, "pad": 10_000, "gzip": True})
    assert int(small.headers["content-length"]) < ANSWER_LIMIT < len(small.content)
    error = {"message": f"expert 'coding' sent an answer of more than {ANSWER_LIMIT} bytes "
                        "(decoded), over the gateway's max_answer_bytes (AnswerTooLarge)",
             "type": "upstream_error", "param": None, "code": None}
    for extra in ({"pad": 10_000}, {"pad": 10_000, "gzip": True},
                  # an error answer to a stream is read whole too
                  {"stream": True, "force_status": 500, "plain": "x" * 10_000}):
        r = httpx.post(capped.url + "/v1/completions",
                       json={"model": "ir3de", "prompt": CODE, **extra})
        assert (r.status_code, r.json()["error"]) == (502, error), (extra, r.text)
        assert r.headers["x-ir3de-expert"] == "coding" and "x-ir3de-fallback" not in r.headers
        assert r.headers["x-should-retry"] == "false"
    assert _health(capped, "coding") == ("ok", 0, 0)
    r = httpx.post(capped.url + "/v1/completions",  # within the limit, as before
                   json={"model": "ir3de", "prompt": CODE, "gzip": True})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == \
        "answer from coding to model coding"


def test_a_stream_event_over_max_answer_bytes_ends_the_stream(
        capped: Proc, upstreams: dict[str, Proc]) -> None:
    """The relay held each SSE event until it ended, however long: an expert that never
    ended one took the gateway to 4 GB in 30 s, its client getting nothing. An event over
    max_answer_bytes, unended or whole, now ends the client's stream with the SSE error
    event, after the whole events before it, and the expert's connection is closed."""
    error = {"message": f"expert 'math' sent an SSE event of more than {ANSWER_LIMIT} bytes "
                        "(decoded), over the gateway's max_answer_bytes: the stream is cut",
             "type": "upstream_error", "param": None, "code": None}
    cases = [({"unended": True, "pad": 300}, []),  # no event ever ends
             ({"pad": 10_000, "pad_from": 2}, ["math-0 ", "math-1 "]),
             ({"pad": 10_000, "pad_from": 2, "gzip": True}, ["math-0 ", "math-1 "])]
    for extra, before in cases:
        tag = f"capped-{time.monotonic_ns()}"
        with httpx.stream("POST", capped.url + "/v1/chat/completions", timeout=10, json=_chat(
                MATH, model="math", stream=True, chunks=50, tag=tag, **extra)) as r:
            assert r.status_code == 200
            events = [line for line in r.iter_lines() if line]
        deltas = [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-2]]
        assert (deltas, events[-2]) == (before, "event: error"), (extra, events)
        assert json.loads(events[-1].removeprefix("data: "))["error"] == error
        request_id = r.headers["x-ir3de-request-id"]
        assert {(e["event"], e["error"], e["cause"]) for e in _log_events(capped)
                if e.get("request_id") == request_id} == \
            {("upstream_error", "EventTooLarge", error["message"])}
        # 50 chunks 0.2 s apart: the expert would still be sending
        state = upstreams["math"].url + f"/streams/{tag}"
        assert _wait_for(lambda: httpx.get(state).json()["state"] == "disconnected")  # noqa: B023
    assert _metrics(capped)['ir3de_upstream_errors_total{expert="math",'
                            'kind="stream_EventTooLarge"}'] == len(cases)
    assert _wait_for(lambda: "ir3de_in_flight 0.0" in httpx.get(capped.url + "/metrics").text)
    with httpx.stream("POST", capped.url + "/v1/chat/completions",  # small events pass
                      json=_chat(MATH, model="math", stream=True, chunks=2)) as r:
        assert [line for line in r.iter_lines() if line][-1] == "data: [DONE]"


def test_oversized_event_finds_the_first_event_over_the_limit() -> None:
    """Whole events and the unfinished last one, any line ending: whether an event came in
    one read or many does not matter."""
    from ir3de.serve import _oversized_event

    for eol in (b"\n", b"\r", b"\r\n"):
        small, big = b"data: 1" + eol + eol, b"data: " + b"x" * 20 + eol + eol
        assert _oversized_event(bytearray(small * 5), 12) is None  # longer, each within
        assert _oversized_event(bytearray(small * 2 + big + small), 12) == 2 * len(small)
        assert _oversized_event(bytearray(small + b"data: " + b"x" * 20), 12) == len(small)
        assert _oversized_event(bytearray(small + b"data: xx"), 12) is None
        assert _oversized_event(bytearray(big), len(big)) is None


def _admin_raw(gw: Proc, head: bytes, body: bytes) -> tuple[bytes, dict]:
    """The status line and JSON body of the gateway's answer to an admin request that
    sent ``head`` (request line and headers, less the blank line) and ``body``, and nothing
    more: the answer must come without the rest."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(head + b"\r\nhost: 127.0.0.1\r\nauthorization: Bearer "
                     + TOKEN.encode() + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < \
                int(answer.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
            data = sock.recv(65536)  # (times out after 5 s, when the gateway waits on)
            assert data, answer
            answer += data
    head_out, _, json_body = answer.partition(b"\r\n\r\n")
    return head_out.split(b"\r\n", 1)[0], json.loads(json_body)


def test_admin_bodies_over_max_admin_body_bytes_are_a_413(capped: Proc, stats_files,
                                                          upstreams) -> None:
    """The admin API read any body whole: a 2 GB multipart upload took the gateway to
    2.1 GB before its 400. Uploads and settings over max_admin_body_bytes are a 413, as
    soon as the length says so or, chunked, once past it; a real statistics file fits."""
    limit = _admin_limit(stats_files)
    multipart = b"content-type: multipart/form-data; boundary=b"
    start = b'--b\r\ncontent-disposition: form-data; name="stats"; filename="x.stats"\r\n\r\n'
    for head, body in (
            (b"POST /admin/experts HTTP/1.1\r\n%s\r\ncontent-length: %d"
             % (multipart, limit + 1), start),
            (b"POST /admin/experts HTTP/1.1\r\n%s\r\ntransfer-encoding: chunked" % multipart,
             b"%x\r\n%s\r\n" % (limit + 1, start + b"x" * (limit + 1 - len(start)))),
            (b"PATCH /admin/settings HTTP/1.1\r\ncontent-type: application/json\r\n"
             b"transfer-encoding: chunked", b"%x\r\n%s\r\n" % (limit + 1, b" " * (limit + 1)))):
        status, answer = _admin_raw(capped, head, body)
        assert status.startswith(b"HTTP/1.1 413 "), (head, status, answer)
        declared = f"of {limit + 1} bytes" if b"content-length" in head else \
            f"of more than {limit} bytes"
        assert answer["error"] == {
            "message": f"request body {declared} exceeds the admin API's limit of {limit} "
                       "(max_admin_body_bytes)", "type": "invalid_request_error",
            "param": None, "code": "body_too_large"}
    line = _request_log(capped)[-1]
    assert (line["path"], line["status"]) == ("/admin/settings", 413)
    # a client gone mid-upload: a 499, not a traceback
    with socket.create_connection(("127.0.0.1", capped.port), timeout=5) as sock:
        sock.sendall(b"POST /admin/experts HTTP/1.1\r\nhost: x\r\n%s\r\ncontent-length: "
                     b"5000\r\nauthorization: Bearer %s\r\n\r\n%s" % (multipart,
                                                                      TOKEN.encode(), start))
        time.sleep(0.3)
    assert _wait_for(lambda: _request_log(capped)[-1]["status"] == 499)
    assert "Traceback" not in _log_text(capped)
    r = httpx.post(capped.url + "/admin/experts", headers=_admin(),
                   data={"url": upstreams["law"].url + "/v1", "name": "law-sized"},
                   files={"stats": ("law.stats", stats_files["law"].read_bytes())})
    assert r.status_code == 200, r.text
    assert httpx.delete(capped.url + "/admin/experts/law-sized",
                        headers=_admin()).status_code == 200
    r = httpx.patch(capped.url + "/admin/settings", headers=_admin(), json={"threshold": 0.0})
    assert r.status_code == 200, r.text


def test_url_credentials_and_api_key_env_are_refused_together(capped: Proc, stats_files,
                                                               upstreams) -> None:
    """An expert URL with user:password@ and an api_key_env sent Basic authorization:
    httpx put the URL's credentials in place of the configured Bearer key, without a word.
    Refused together (in the config: see test_bad_config_exits_1_with_the_field); the URL's
    credentials alone are still sent, as Basic authorization."""
    url = upstreams["law"].url.replace("//", "//user:pw@") + "/v1"
    law = {"stats": ("law.stats", stats_files["law"].read_bytes())}
    r = httpx.post(capped.url + "/admin/experts", headers=_admin(), files=law,
                   data={"url": url, "name": "law-creds", "api_key_env": "SPARE_KEY"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {
        "message": "invalid expert endpoint: api_key_env: the url holds "
                   "credentials (user:password@), which httpx sends as Basic authorization "
                   "in place of api_key_env's Bearer key: give one or the other",
        "type": "invalid_request_error", "param": "api_key_env", "code": None}
    assert "law-creds" not in _experts(capped)
    r = httpx.post(capped.url + "/admin/experts", headers=_admin(), files=law,
                   data={"url": url, "name": "law-creds"})
    assert r.status_code == 200, r.text
    try:
        r = httpx.post(capped.url + "/v1/completions",
                       json={"model": "law-creds", "prompt": LEGAL})
        assert r.json()["auth"] == "Basic dXNlcjpwdw=="  # user:pw
    finally:
        httpx.delete(capped.url + "/admin/experts/law-creds", headers=_admin())


def test_saved_url_credentials_with_an_edited_api_key_env_are_named(
        stats_files, upstreams, tmp_path, monkeypatch) -> None:
    """Merged at a restart, a URL with credentials that the admin API saved and an
    api_key_env edited into gateway.yaml since would be the pair the config refuses: a
    startup error naming the expert and the state folder, not a pydantic traceback."""
    from ir3de.errors import IR3DEError
    from ir3de.serve import _initial_state, load_config

    config = _config(tmp_path, stats_files, upstreams)
    gw = _gateway(config)
    try:
        assert httpx.delete(gw.url + "/admin/experts/coding",
                            headers=_admin()).status_code == 200
        r = httpx.post(gw.url + "/admin/experts", headers=_admin(),
                       data={"url": upstreams["coding"].url.replace("//", "//u:p@") + "/v1"},
                       files={"stats": ("coding.stats", stats_files["coding"].read_bytes())})
        assert r.status_code == 200, r.text
    finally:
        gw.stop()
    _with_experts(config, coding={"api_key_env": "IR3DE_TEST_CODER_KEY"})
    monkeypatch.setenv("IR3DE_TEST_CODER_KEY", "coder-key")
    with pytest.raises(IR3DEError) as caught:
        _initial_state(load_config(config))
    assert str(caught.value).startswith(
        "experts.coding: api_key_env: the url holds credentials")
    assert f"merged with those the admin API saved in {tmp_path / 'state'}" in \
        str(caught.value)
