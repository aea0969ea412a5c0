"""An OpenAI-compatible gateway that routes each request to a domain-expert LLM server.

``ir3de serve --config gateway.yaml`` (extra ``ir3de[serve]``) starts an ASGI app in front
of any OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp, TGI, ...):

* ``POST /v1/chat/completions`` and ``POST /v1/completions``: with ``model`` set to the
  gateway's name the prompt is routed; with an expert's name it goes straight there. The
  upstream answer is passed through unchanged (``stream: true`` as SSE, event by event)
  with headers ``x-ir3de-expert``, ``x-ir3de-confidence`` and (routers with a pair table)
  ``x-ir3de-coverage``, and the upstream's headers that OpenAI clients act on
  (``retry-after``, ``x-should-retry``, ``x-request-id``, rate limits).
* ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /healthz`` (always 200; lists the
  experts cooling down), ``GET /metrics`` (Prometheus).
* Client API keys: with ``api_keys_env`` set, the environment variable it names holds one
  or more keys (comma-separated), and every request but ``/healthz``, ``/metrics`` and the
  admin API (which has its own token) must carry ``Authorization: Bearer <one of them>``,
  or gets a 401 (``code: invalid_api_key``, the SDK's ``AuthenticationError``). An unset
  or empty variable, or an empty key in it, stops the gateway at startup. The client's
  ``Authorization`` header is never forwarded: experts get their own ``api_key_env``.
* ``/admin/...`` behind a bearer token (from the environment variable named in the
  config; unset -> the admin API is off): list experts (with their cooldown state), add
  and remove them (a removed expert's failures are forgotten), change α, k, λ,
  selector, the confidence threshold or the minimum coverage. Every change re-solves the
  router off the event loop, swaps it in one assignment (requests in flight finish on the
  router they started with) and persists it atomically to ``state_dir``, which a restart
  loads back.

Failures: a refused connection is retried once (it may be a stale keep-alive); a second
failure, or a timeout, sends the request to the fallback expert, and without one the
client gets 502 (504 for a timeout; 502 too for an answer that cannot be decoded). An
upstream HTTP error is returned as is; a stream cut by the upstream ends with an SSE
``error`` event, after the last whole event. The gateway's own errors, unknown
routes included, use OpenAI's error JSON (``{"error": {"message", "type", "param",
"code"}}``).

Cooldowns: finding out that an expert is down costs each request a refused connection
and its retry, or the expert's whole ``timeout``. After ``cooldown_failures`` such
failures in a row (upstream HTTP errors are answers and do not count), the expert gets
no requests for ``cooldown_seconds``: routed ones go straight to the fallback (reason
``expert_down``), and those that name it, or have no fallback that is not itself
cooling down, get a 503 (``code: expert_unavailable``) with ``retry-after``. Then one
request tries it: an answer brings it back, a failure starts the next cooldown at once,
and the other requests are treated as during the cooldown until then. Any answer resets
the count. ``cooldown_failures: 0`` turns cooldowns off.

Example config::

    name: ir3de
    router: {path: router.safetensors}        # or {stats: [math.stats, code.stats]}
    experts:
      math:   {url: http://127.0.0.1:8001/v1, model: qwen-math}
      coding: {url: http://127.0.0.1:8002/v1, api_key_env: CODER_KEY, timeout: 120}
    fallback: math
    policy: last_user          # all_user | conversation
    threshold: 0.0             # below this confidence, use the fallback
    min_coverage: 0.0          # below this share of seen token pairs, use the fallback
    state_dir: gateway-state   # where admin changes persist
    api_keys_env: IR3DE_API_KEYS   # clients must send one of these keys (default: no keys)
    admin_token_env: IR3DE_ADMIN_TOKEN   # the admin API's token (unset: admin API off)
    cooldown_failures: 3       # failures in a row before an expert cools down (0: never)
    cooldown_seconds: 30       # ... for this long
"""

import asyncio
import contextlib
import copy
import datetime
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .errors import IR3DEError, require_file

__all__ = ["create_app", "load_config"]

log = logging.getLogger("ir3de.access")

_ROUTER_FILE = "router.safetensors"
_EXPERTS_FILE = "experts.json"


def _pydantic() -> Any:
    try:
        import pydantic
    except ImportError:
        raise IR3DEError("the gateway needs its extra: pip install 'ir3de[serve]'") from None
    return pydantic


@functools.cache
def _models() -> tuple[type, type, type]:
    """The config models (built lazily, once: pydantic is an optional dependency)."""
    pd = _pydantic()

    class ExpertConfig(pd.BaseModel):
        model_config = pd.ConfigDict(extra="forbid")
        url: str = pd.Field(description="base URL of the OpenAI-compatible API, e.g. "
                                        "http://host:8000/v1")
        model: str | None = pd.Field(None, description="upstream model name (default: the "
                                                       "expert's name)")
        api_key_env: str | None = None
        # finite: an infinite timeout would be saved to experts.json as Infinity, which
        # is not JSON
        timeout: float = pd.Field(60.0, gt=0, allow_inf_nan=False,
                                  description="seconds to wait for the expert's answer")

        @pd.field_validator("url")
        @classmethod
        def _http(cls, v: str) -> str:
            from urllib.parse import urlsplit

            if not v.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, got {v!r}")
            if not urlsplit(v).hostname:
                raise ValueError(f"url names no host: {v!r}")
            return v.rstrip("/")

    class RouterSource(pd.BaseModel):
        model_config = pd.ConfigDict(extra="forbid")
        path: str | None = None
        stats: list[str] | None = pd.Field(None, min_length=1)
        embedder: str | None = None
        preset: str = "default"

        @pd.model_validator(mode="after")
        def _one(self) -> "RouterSource":
            if (self.path is None) == (self.stats is None):
                raise ValueError("give exactly one of router.path (a saved router) and "
                                 "router.stats (statistics files)")
            return self

    class GatewayConfig(pd.BaseModel):
        model_config = pd.ConfigDict(extra="forbid")
        name: str = "ir3de"
        router: RouterSource
        experts: dict[str, ExpertConfig]
        fallback: str | None = None
        policy: Literal["last_user", "all_user", "conversation"] = "last_user"
        threshold: float = pd.Field(0.0, ge=0.0, le=1.0)
        min_coverage: float = pd.Field(0.0, ge=0.0, le=1.0)
        max_body_bytes: int = pd.Field(1_000_000, gt=0)
        admin_token_env: str | None = "IR3DE_ADMIN_TOKEN"
        api_keys_env: str | None = pd.Field(None, min_length=1,
                                            description="environment variable holding the "
                                                        "client API keys, comma-separated")
        state_dir: str | None = None
        # strict: YAML reads `yes` as true, which would otherwise pass as 1 failure or 1 s
        cooldown_failures: int = pd.Field(3, ge=0, strict=True,
                                          description="consecutive failures (refused "
                                                      "connections, timeouts) after which "
                                                      "an expert cools down; 0: never")
        cooldown_seconds: float = pd.Field(30.0, gt=0, allow_inf_nan=False, strict=True,
                                           description="how long an expert that keeps "
                                                       "failing gets no requests")

        @pd.model_validator(mode="after")
        def _consistent(self) -> "GatewayConfig":
            if not self.experts:
                raise ValueError("experts: at least one expert endpoint is needed")
            if self.fallback is not None and self.fallback not in self.experts:
                raise ValueError(f"fallback {self.fallback!r} is not one of the experts "
                                 f"({', '.join(self.experts)})")
            if self.min_coverage > 0 and self.fallback is None:
                raise ValueError("min_coverage sends prompts to the fallback expert: set "
                                 "fallback too")
            if self.name in self.experts:
                raise ValueError(f"name {self.name!r} is also an expert's name")
            return self

    return ExpertConfig, RouterSource, GatewayConfig


def _problems(exc: Any) -> str:
    """A pydantic ValidationError on one line: ``field: message; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                     for e in exc.errors())


def load_config(path: str | os.PathLike[str]) -> Any:
    """Read and validate a YAML gateway config; errors name the file and the field."""
    import yaml

    pd = _pydantic()
    path = Path(path)
    require_file(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise IR3DEError(f"{path}: not valid YAML ({exc})") from None
    except UnicodeDecodeError:
        raise IR3DEError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise IR3DEError(f"{path}: expected a mapping at the top level")
    base = path.parent
    try:
        config = _models()[2].model_validate(data)
    except pd.ValidationError as exc:
        raise IR3DEError(f"{path}: invalid config: {_problems(exc)}") from None
    # Relative paths in the config are relative to the config file.
    src = config.router
    if src.path is not None:
        src.path = str(base / src.path)
    if src.stats is not None:
        src.stats = [str(base / s) for s in src.stats]
    if config.state_dir is not None:
        config.state_dir = str(base / config.state_dir)
    return config


# --------------------------------------------------------------------------- state
@dataclass(frozen=True)
class _State:
    """The router, expert endpoints and fallback cuts in use; replaced whole, never mutated."""

    router: Any
    experts: dict[str, Any]
    threshold: float
    min_coverage: float = 0.0

    def __post_init__(self) -> None:
        if self.min_coverage > 0 and not self.router.reports_coverage:
            raise IR3DEError("min_coverage needs a router whose decisions report coverage: "
                             "the 'geo' selector on a token-pair table (the default preset)")


def _initial_state(config: Any) -> _State:
    from .router import Router, RouterConfig
    from .statistics import load_stats_files

    state_dir = Path(config.state_dir) if config.state_dir else None
    if state_dir is not None and state_dir.exists() and not state_dir.is_dir():
        # found now rather than at the first admin change, which could not be saved
        raise IR3DEError(f"state_dir {state_dir} exists and is not a folder")
    if state_dir is not None and (state_dir / _ROUTER_FILE).is_file():
        # A restart comes back with what the admin API last persisted.
        router = Router.load(state_dir / _ROUTER_FILE)
        saved_file = state_dir / _EXPERTS_FILE
        expert_cls = _models()[0]
        try:
            saved = json.loads(saved_file.read_text(encoding="utf-8"))
            experts = {n: expert_cls.model_validate(e) for n, e in saved["experts"].items()}
            # min_coverage: absent from state folders written before it existed
            state = _State(router, experts, float(saved["threshold"]),
                           float(saved.get("min_coverage", 0.0)))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # (pydantic's ValidationError is a ValueError)
            reason = _problems(exc) if isinstance(exc, _pydantic().ValidationError) else exc
            raise IR3DEError(f"{saved_file}: not the gateway state this ir3de writes "
                             f"({type(exc).__name__}: {reason}); move {state_dir} away to "
                             "start from the config") from None
    else:
        src = config.router
        if src.path is not None:
            router = Router.load(src.path, embedder=src.embedder)
        else:
            stats = load_stats_files(src.stats)
            embedder = stats[0].embedder if src.embedder is None else src.embedder
            router = Router(embedder, RouterConfig.preset(src.preset)).fit_stats(stats)
        state = _State(router, dict(config.experts), config.threshold, config.min_coverage)
    for name in state.experts:
        _check_expert_name(name, config.name)
    missing = [e for e in state.router.experts if e not in state.experts]
    if missing:
        where = f"{state_dir / _EXPERTS_FILE} (the saved state, which replaces the config's " \
            "experts)" if state_dir is not None and (state_dir / _ROUTER_FILE).is_file() \
            else "'experts' in the config"
        raise IR3DEError(f"router experts {missing} have no endpoint under {where}")
    return state


def _persist(state: _State, state_dir: str | None) -> None:
    if state_dir is None:
        return
    from .store import atomic_write_text

    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # Router first, endpoints second: both are atomic renames, and the endpoints file is
    # what names the experts a restarted gateway will serve.
    state.router.save(folder / _ROUTER_FILE)
    # allow_nan=False: a non-finite number would be written as NaN or Infinity, which is
    # not JSON (ValueError instead: the change is not applied)
    atomic_write_text(folder / _EXPERTS_FILE, json.dumps(
        {"experts": {n: e.model_dump() for n, e in state.experts.items()},
         "threshold": state.threshold, "min_coverage": state.min_coverage}, indent=1,
        allow_nan=False))


# --------------------------------------------------------------------------- helpers
def _check_expert_name(name: str, gateway: str) -> None:
    """An expert name must be a usable ``model``: not the gateway's own (which routes)."""
    if not name.strip() or name != name.strip():
        raise IR3DEError(f"invalid expert name {name!r}: it must be non-empty, without "
                         "surrounding whitespace")
    if name == gateway:
        raise IR3DEError(f"expert name {name!r} is the gateway's own name, which routes; "
                         "choose another")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(raw: bytes) -> Any:
    """The request body as JSON, or ValueError with the reason. Beyond ``json.loads``: NaN
    and Infinity are refused (the forwarded body must be valid JSON), as are unpaired
    surrogates (\\ud800), which no UTF-8 encoder accepts, and nesting too deep to parse."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"request body is not valid JSON ({reason})") from None
    return body


def _error(status: int, message: str, kind: str = "invalid_request_error",
           code: str | None = None, param: str | None = None,
           headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status_code=status, headers=headers)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and p.get("type") == "text"
                         and isinstance(p.get("text"), str))
    return ""


def _has_media(messages: list[dict[str, Any]]) -> bool:
    """Whether some message has a content part that is not text (an image, audio...)."""
    return any(isinstance(p, dict) and p.get("type") != "text"
               for m in messages if isinstance(m.get("content"), list) for p in m["content"])


def _is_token_ids(prompt: Any) -> bool:
    """Whether a completions ``prompt`` is token ids (a list of ints, or a list of such
    lists), which OpenAI's API accepts: no text the router could read."""
    def ids(p: Any) -> bool:
        return isinstance(p, list) and bool(p) and \
            all(isinstance(t, int) and not isinstance(t, bool) for t in p)

    return ids(prompt) or (isinstance(prompt, list) and bool(prompt) and all(map(ids, prompt)))


# Upstream response headers that OpenAI clients act on, relayed with the answer: the SDK
# waits retry-after(-ms) and obeys x-should-retry before retrying, reports x-request-id, and
# rate-limit headers are how a client paces itself. Other headers describe the upstream's
# own connection and framing (length, encoding, alt-svc...) and would be wrong from here.
_RELAYED_HEADERS = frozenset({"retry-after", "retry-after-ms", "x-should-retry",
                              "x-request-id"})
_RELAYED_PREFIXES = ("x-ratelimit-", "openai-")


def _relayed_headers(upstream: Any) -> dict[str, str]:
    """The headers of an upstream answer that go on to the client (see _RELAYED_HEADERS)."""
    return {k: v for k, v in upstream.headers.items()
            if k in _RELAYED_HEADERS or k.startswith(_RELAYED_PREFIXES)}


# --------------------------------------------------------------------------- client keys
def _client_keys(env: str | None) -> tuple[bytes, ...] | None:
    """The SHA-256 digests of the client API keys held by the variable ``env`` names, or
    None when no keys are configured (``env`` is None).

    Raises IR3DEError when the variable is unset or empty, or holds an empty key or one that
    a bearer token cannot carry: a gateway its operator meant to protect must not start
    open, nor with a key no client could send.
    """
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None or not value.strip():
        problem = "is not set" if value is None else "is empty"
        raise IR3DEError(f"api_keys_env: the environment variable {env} {problem}; set it "
                         "to the client API keys (comma-separated), or remove api_keys_env "
                         "from the config to serve without keys")
    keys = [k.strip() for k in value.split(",")]
    for i, key in enumerate(keys, 1):
        if not key:
            raise IR3DEError(f"api_keys_env: key {i} of {len(keys)} in {env} is empty; "
                             "separate the keys with single commas, none at either end")
        if not all("!" <= c <= "~" for c in key):
            raise IR3DEError(f"api_keys_env: key {i} of {len(keys)} in {env} holds a space "
                             "or a character outside printable ASCII, which an "
                             "'Authorization: Bearer' header cannot carry")
    # Digests are what requests are compared with: all of one length, so the time a
    # comparison takes tells neither a key nor its length.
    return tuple(hashlib.sha256(k.encode("ascii")).digest() for k in keys)


# Open without a client key: probes and scrapers; the admin API has its own token.
_OPEN_PATHS = frozenset({"/healthz", "/metrics"})


def _route_path(scope: Any) -> str:
    """The path the app routes on: ``path`` less the ``root_path`` a proxy may mount the
    app under (as Starlette's router reads it)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        return path[len(root):]
    return path


class _ClientKeys:
    """ASGI middleware: every request but the open paths and the admin API must carry
    ``Authorization: Bearer <a client key>``, or gets a 401 in OpenAI's error JSON, before
    its body is read. Unknown paths need a key too (closed by default: a route added later
    is not open by mistake).

    Pure ASGI rather than Starlette's BaseHTTPMiddleware, which would run the relayed
    streams in a task of its own: requests let through reach the app untouched.
    """

    def __init__(self, app: Any, digests: tuple[bytes, ...], refused: Any) -> None:
        self.app, self.digests, self.refused = app, digests, refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = _route_path(scope)
            if path not in _OPEN_PATHS and path != "/admin" and not path.startswith("/admin/"):
                problem = self._problem(scope["headers"])
                if problem is not None:
                    reason, message = problem
                    self.refused(path, reason)
                    response = _error(401, message, code="invalid_api_key",
                                      headers={"www-authenticate": "Bearer"})
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _problem(self, headers: Any) -> tuple[str, str] | None:
        """None for a request with a valid key, else (metrics reason, message). The
        message never repeats what the client sent."""
        value = next((v for k, v in headers if k == b"authorization"), b"")
        parts = value.split(None, 1)
        if not parts or (parts[0].lower() == b"bearer" and len(parts) == 1):
            return "missing", "no API key: send one of the gateway's client keys as " \
                              "'Authorization: Bearer <key>'"
        if parts[0].lower() != b"bearer":
            return "malformed", "the Authorization header must be 'Bearer <key>', with " \
                                "one of the gateway's client keys"
        digest = hashlib.sha256(parts[1].strip()).digest()
        # compared with every key, matched or not: the time taken does not say which
        matched = False
        for key in self.digests:
            matched |= hmac.compare_digest(digest, key)
        if not matched:
            return "invalid", "invalid API key: not one of the gateway's client keys"
        return None


# The ways an SSE event can end (a blank line), whatever the line endings: \r\n\r\n ends
# with \n\r\n.
_EVENT_ENDS = (b"\n\n", b"\r\r", b"\n\r\n")


def _whole_events(buffer: bytearray, start: int) -> int:
    """The length of the longest prefix of ``buffer`` made of whole SSE events, looking for
    event ends from ``start`` on (the bytes before it hold none); 0 if there is none."""
    return max((i + len(end) for end in _EVENT_ENDS
                if (i := buffer.rfind(end, start)) >= 0), default=0)


def _routing_text(body: dict[str, Any], chat: bool, policy: str) -> str:
    """The text the router sees, per the policy; raises ValueError on malformed input."""
    if not chat:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt)
        if _is_token_ids(prompt):
            return ""  # no text to route on
        raise ValueError("'prompt' must be a string, a list of strings or token ids")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or \
            not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a non-empty list of message objects")
    if policy == "conversation":
        return "\n".join(_content_text(m.get("content")) for m in messages)
    users = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("'messages' has no user message to route on")
    return users[-1] if policy == "last_user" else "\n".join(users)


# --------------------------------------------------------------------------- cooldowns
@dataclass(eq=False)
class _Health:
    """One expert's consecutive failures and cooldowns. Changed in place, on the event loop
    only, by :class:`_Cooldowns`."""

    failures: int = 0  # consecutive failures counted since it last answered
    until: float = 0.0  # (monotonic) end of its last cooldown; 0.0: none since it answered
    probing: bool = False  # the cooldown is over and one request is trying the expert
    cooldowns: int = 0  # cooldowns started; also the epoch of the requests admitted
    down_since: float = 0.0  # (monotonic) start of the first cooldown of this outage


@dataclass(frozen=True, eq=False)
class _Ticket:
    """Leave to send one request to an expert; its outcome goes to :meth:`_Cooldowns.done`.
    It holds the record it was issued from: should the expert be removed (and perhaps
    added again) meanwhile, the outcome lands on the dropped record, not the new one."""

    expert: str
    health: _Health
    epoch: int  # the record's cooldowns when issued
    probe: bool  # the request that tries the expert after a cooldown


@dataclass(frozen=True)
class _Down:
    """An expert that refuses requests now: its consecutive failures, and the seconds until
    it is tried again (0.0 while a request is trying it)."""

    expert: str
    failures: int
    retry_in: float

    def why(self) -> str:
        times = "time" if self.failures == 1 else "times"
        when = f"will be tried again in {math.ceil(self.retry_in)} s" if self.retry_in > 0 \
            else "a request is trying it again now"
        return f"it failed {self.failures} {times} in a row (connection errors or " \
               f"timeouts) and {when}"


class _Cooldowns:
    """Consecutive failures per expert, and the cooldowns they start.

    A failure is what sends a request on to the fallback: a connection error (after the
    retry) or a timeout. Any answer, an HTTP error included, resets the count and ends a
    cooldown. After ``limit`` consecutive failures the expert *cools down* for ``seconds``:
    :meth:`admit` refuses it every request. After that one request is let through, the
    probe: its answer brings the expert back, its failure starts the next cooldown at once,
    and the others are refused while it is under way (each would otherwise wait for the
    same timeout). ``limit`` 0 counts failures but never starts a cooldown.

    No lock: every method is synchronous and runs on the event loop, so each sees and
    leaves a consistent record. What may change while a request awaits its expert, between
    :meth:`admit` and :meth:`done`, is handled by the ticket's epoch: a request admitted
    before the expert's latest cooldown began fails with news that is out of date (the
    expert was already known to be failing; it may be back by now), so its failure neither
    counts nor starts a cooldown. Once a cooldown has started, then, the probe is the only
    request whose failure counts until the expert answers again.
    """

    def __init__(self, limit: int, seconds: float, started: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.seconds, self.started, self.clock = limit, seconds, started, clock
        self.records: dict[str, _Health] = {}

    def sync(self, experts: Iterable[str]) -> None:
        """Keep records for exactly these experts: a removed expert's record is dropped
        (ending its cooldown), an added one starts clean."""
        keep = set(experts)
        for name in [n for n in self.records if n not in keep]:
            if self.records.pop(name).until:
                log.info(json.dumps({"event": "cooldown_end", "expert": name,
                                     "reason": "removed"}))
        for name in keep:
            self.records.setdefault(name, _Health())

    def _record(self, expert: str) -> _Health:
        # An expert without a record is no longer the gateway's (a request that started
        # before its removal): an untracked record, so that nothing is kept for it.
        return self.records.get(expert) or _Health()

    def admit(self, expert: str) -> _Ticket | _Down:
        """A ticket to send a request to ``expert``, or why it refuses requests now."""
        record = self._record(expert)
        left = record.until - self.clock()
        if left > 0:
            return _Down(expert, record.failures, left)
        probe = record.until > 0  # the cooldown is over: one request at a time tries it
        if probe:
            if record.probing:
                return _Down(expert, record.failures, 0.0)
            record.probing = True
        return _Ticket(expert, record, record.cooldowns, probe)

    def done(self, ticket: _Ticket, answered: bool | None) -> None:
        """Record how a ticket's request went: ``True`` the expert answered, ``False`` it
        failed, ``None`` neither (cancelled, or the gateway's own connection limit)."""
        record, now = ticket.health, self.clock()
        current = ticket.epoch == record.cooldowns
        probe = ticket.probe and current and record.probing  # still this cooldown's probe
        if probe:
            record.probing = False  # over; without an outcome, the next request probes
        if answered:
            if record.until and record is self.records.get(ticket.expert):
                log.info(json.dumps({"event": "cooldown_end", "expert": ticket.expert,
                                     "reason": "answered",
                                     "down_seconds": round(now - record.down_since, 3)}))
            record.failures, record.until, record.probing, record.down_since = 0, 0.0, \
                False, 0.0
        elif answered is False and current:
            record.failures += 1
            if self.limit and (probe or record.failures >= self.limit):
                self._start(ticket.expert, record, now)

    def _start(self, expert: str, record: _Health, now: float) -> None:
        record.down_since = record.down_since or now
        record.until = now + self.seconds
        record.cooldowns += 1  # requests admitted before now are out of date
        record.probing = False
        if record is not self.records.get(expert):
            return  # a removed expert's record: nobody sees it
        if self.started is not None:
            self.started.labels(expert).inc()
        log.warning(json.dumps({"event": "cooldown_start", "expert": expert,
                                "failures": record.failures, "seconds": self.seconds,
                                "until": _wall_clock(self.seconds)}))

    def refusing(self) -> dict[str, float]:
        """The experts that refuse requests now, with the seconds until each is tried again
        (0.0 while a request is trying it)."""
        now = self.clock()
        return {name: max(r.until - now, 0.0) for name, r in self.records.items()
                if r.until > now or (r.until and r.probing)}

    def describe(self, expert: str) -> dict[str, Any]:
        """An expert's state for the admin API: ``ok``; ``cooling_down`` (refusing requests
        until ``cooling_down_until``); ``half_open`` (the cooldown is over: the next request
        tries the expert) or ``probing`` (a request is trying it)."""
        record = self._record(expert)
        left = record.until - self.clock()
        state = "ok" if not record.until else "cooling_down" if left > 0 else \
            "probing" if record.probing else "half_open"
        return {"state": state, "consecutive_failures": record.failures,
                "cooling_down_until": _wall_clock(left) if left > 0 else None,
                "retry_in": round(left, 3) if left > 0 else None,
                "cooldowns": record.cooldowns}


def _wall_clock(seconds_from_now: float) -> str:
    """The UTC time ``seconds_from_now`` from now, ISO 8601, to the millisecond."""
    moment = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="milliseconds")


class _Metrics:
    def __init__(self) -> None:
        import prometheus_client as pc

        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.requests = pc.Counter("ir3de_requests", "Requests by expert and status code",
                                   ["expert", "status"], registry=r)
        self.errors = pc.Counter("ir3de_upstream_errors", "Upstream failures by expert "
                                 "and kind", ["expert", "kind"], registry=r)
        self.fallbacks = pc.Counter("ir3de_fallbacks", "Requests sent to the fallback "
                                    "expert, by reason", ["reason"], registry=r)
        self.routing = pc.Histogram("ir3de_routing_seconds", "Routing decision time",
                                    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3,
                                             5e-3, 2e-2), registry=r)
        self.upstream = pc.Histogram("ir3de_upstream_seconds", "Upstream time to response "
                                     "headers", ["expert"], registry=r)
        self.in_flight = pc.Gauge("ir3de_in_flight", "Requests being served", registry=r)
        self.unauthorized = pc.Counter("ir3de_unauthorized", "Requests refused for a "
                                       "missing, malformed or invalid client API key, by "
                                       "reason", ["reason"], registry=r)
        self.cooldowns = pc.Counter("ir3de_cooldowns", "Cooldowns started (an expert "
                                    "that kept failing gets no requests for a while), by "
                                    "expert", ["expert"], registry=r)
        # read at each scrape (cooldowns run out with time, not on an event)
        self.cooling = pc.Gauge("ir3de_experts_cooling_down", "Experts refusing requests "
                                "now: cooling down, or being tried by one request after a "
                                "cooldown", registry=r)


# --------------------------------------------------------------------------- the app
def create_app(config: Any) -> Any:
    """The ASGI app for a validated gateway config (see :func:`load_config`).

    (This module does not use postponed annotations: FastAPI reads the handlers'
    ``Request`` annotations at definition time, and fastapi is imported lazily here.)
    """
    import anyio
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .errors import IR3DEError as _Err

    client_keys = _client_keys(config.api_keys_env)  # before the (slower) router loads
    holder = {"state": _initial_state(config)}
    metrics = _Metrics()
    cooldowns = _Cooldowns(config.cooldown_failures, config.cooldown_seconds,
                           started=metrics.cooldowns)
    cooldowns.sync(holder["state"].experts)
    metrics.cooling.set_function(lambda: len(cooldowns.refusing()))
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000,
                                                   max_keepalive_connections=200))
    # An unset or empty token variable turns the admin API off.
    admin_token = (os.environ.get(config.admin_token_env) or None) if config.admin_token_env \
        else None
    admin_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="ir3de gateway", docs_url=None, redoc_url=None, lifespan=lifespan)

    def _refused(path: str, reason: str) -> None:
        metrics.unauthorized.labels(reason).inc()
        if path in ("/v1/chat/completions", "/v1/completions"):  # as _counted counts them
            metrics.requests.labels("(gateway)", "401").inc()
        log.info(json.dumps({"path": path, "status": 401, "refused": reason}))

    if client_keys is not None:
        app.add_middleware(_ClientKeys, digests=client_keys, refused=_refused)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Any:
        # unknown routes, wrong methods, unparsable forms: OpenAI's error JSON too
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    async def _send(expert_name: str, endpoint: Any, path: str, body: dict[str, Any],
                    stream: bool) -> httpx.Response:
        payload = {**body, "model": endpoint.model or expert_name}
        headers = {"content-type": "application/json"}
        if endpoint.api_key_env and os.environ.get(endpoint.api_key_env):
            headers["authorization"] = f"Bearer {os.environ[endpoint.api_key_env]}"
        request = client.build_request("POST", endpoint.url + path, json=payload,
                                       headers=headers, timeout=endpoint.timeout)
        for attempt in (0, 1):
            start = time.perf_counter()
            try:
                response = await client.send(request, stream=stream)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # (DecodingError: a body that its content-encoding does not describe)
                metrics.errors.labels(expert_name, type(exc).__name__).inc()
                if attempt == 1 or not isinstance(exc, httpx.ConnectError):
                    raise
                continue  # one retry: the connection may have been a stale keep-alive
            metrics.upstream.labels(expert_name).observe(time.perf_counter() - start)
            return response
        raise AssertionError("unreachable")

    async def _attempt(ticket: _Ticket, endpoint: Any, path: str, body: dict[str, Any],
                       stream: bool) -> httpx.Response:
        """:func:`_send` to the ticket's expert, its outcome recorded for cooldowns."""
        answered: bool | None = None  # cancelled (the request or the server): no outcome
        try:
            response = await _send(ticket.expert, endpoint, path, body, stream)
            answered = True
            return response
        except httpx.PoolTimeout:
            # all of the gateway's connections busy: its own limit, which says nothing
            # about this expert
            raise
        except httpx.TransportError:  # refused twice, timed out, cut off before answering
            answered = False
            raise
        except httpx.DecodingError:  # an answer, in a body the gateway cannot decode
            answered = True
            raise
        finally:
            cooldowns.done(ticket, answered)

    def _unavailable(down: _Down, fallback: _Down | None) -> Any:
        """The 503 for a request whose expert (and fallback, if any) is cooling down, with
        ``retry-after`` (whole seconds, at least 1: when one of them is tried again)."""
        message = f"expert {down.expert!r} is unavailable: {down.why()}"
        retry_in = down.retry_in
        if fallback is not None:
            message += f"; so is the fallback expert {fallback.expert!r}: {fallback.why()}"
            retry_in = min(retry_in, fallback.retry_in)
        metrics.requests.labels(down.expert, "503").inc()
        return _error(503, message, kind="upstream_error", code="expert_unavailable",
                      headers={"retry-after": str(max(1, math.ceil(retry_in)))})

    async def _proxy(request: Request, path: str, chat: bool) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > config.max_body_bytes:
            # Refused before reading: a huge body never reaches memory.
            return _error(413, f"request body of {declared} bytes exceeds the limit of "
                               f"{config.max_body_bytes}", code="body_too_large")
        raw = await request.body()
        if len(raw) > config.max_body_bytes:  # chunked uploads declare no length
            return _error(413, f"request body of {len(raw)} bytes exceeds the limit of "
                               f"{config.max_body_bytes}", code="body_too_large")
        try:
            body = _parse_json(raw)
        except ValueError as exc:
            return _error(400, str(exc))
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        state = holder["state"]  # this request finishes on the router it started with
        model = body.get("model", config.name)
        if not isinstance(model, str):
            return _error(400, f"'model' must be a string, got {type(model).__name__}",
                          param="model")
        stream = body.get("stream")
        if stream is None:  # OpenAI's API reads "stream": null as not streaming
            stream = False
        if not isinstance(stream, bool):
            # bool("false") is True: guessing would stream to a client that asked not to
            return _error(400, "'stream' must be true or false", param="stream")
        routed = model == config.name
        if not routed and model not in state.experts:
            return _error(404, f"model {model!r} does not exist; use {config.name!r} to "
                               f"route or one of {sorted(state.experts)}",
                          code="model_not_found", param="model")
        param = "messages" if chat else "prompt"
        try:
            # Only routing reads the prompt: a request that names an expert is forwarded
            # as is, with whatever that expert accepts (token ids, no user message...).
            text = _routing_text(body, chat, config.policy) if routed else ""
        except ValueError as exc:
            return _error(400, str(exc), param=param)
        # an image-only message or a prompt of token ids: nothing to route on, but an
        # expert can answer it
        textless = routed and not text.strip() and \
            (_has_media(body["messages"]) if chat else _is_token_ids(body["prompt"]))
        confidence = coverage = None
        if textless and config.fallback:
            metrics.fallbacks.labels("no_text").inc()
            expert = config.fallback
        elif routed:
            if not text.strip():
                return _error(400, "the prompt has no text to route on; name an expert as "
                                   "'model' or configure a fallback" if textless else
                              "the prompt to route is empty", param=param)
            start = time.perf_counter()
            try:
                decision = state.router.route(text)
            except _Err as exc:
                return _error(400, f"cannot route this prompt: {exc}")
            metrics.routing.observe(time.perf_counter() - start)
            expert, confidence = decision.expert, decision.confidence
            coverage = decision.coverage
            if config.fallback and coverage is not None and coverage < state.min_coverage:
                metrics.fallbacks.labels("low_coverage").inc()  # unlike every expert's data
                expert = config.fallback
            elif confidence < state.threshold and config.fallback:
                metrics.fallbacks.labels("low_confidence").inc()
                expert = config.fallback
        else:
            expert = model
        tried = expert
        fallback = config.fallback if config.fallback in state.experts else None
        ticket = cooldowns.admit(expert)
        if isinstance(ticket, _Down):
            # An expert that keeps failing is not tried: a routed request goes on to the
            # fallback, one that names the expert gets a 503 saying when to come back.
            other = cooldowns.admit(fallback) if routed and fallback not in (None, expert) \
                else None
            if not isinstance(other, _Ticket):
                return _unavailable(ticket, other)
            metrics.fallbacks.labels("expert_down").inc()
            expert, ticket = fallback, other
        try:
            response = await _attempt(ticket, state.experts[expert], path, body, stream)
        except httpx.TransportError as exc:
            if fallback is None or fallback == expert:
                before = f"expert {tried!r} is cooling down; " if expert != tried else ""
                return _upstream_failed(expert, state.experts[expert], exc, before)
            second = cooldowns.admit(fallback)
            if isinstance(second, _Down):
                return _upstream_failed(expert, state.experts[expert], exc,
                                        after=f"; the fallback expert {fallback!r} is "
                                              f"unavailable: {second.why()}")
            metrics.fallbacks.labels("upstream_failure").inc()
            expert = fallback
            try:
                response = await _attempt(second, state.experts[expert], path, body, stream)
            except (httpx.TransportError, httpx.DecodingError) as exc2:
                return _upstream_failed(expert, state.experts[expert], exc2,
                                        f"expert {tried!r} failed ({type(exc).__name__}); ")
        except httpx.DecodingError as exc:  # it did answer: no fallback
            return _upstream_failed(expert, state.experts[expert], exc)
        if stream and response.status_code >= 400:
            # An error comes whole, not as a stream: read it now, so that one the gateway
            # cannot read is a 502 in OpenAI's error JSON rather than a traceback.
            try:
                await response.aread()
            except (httpx.TransportError, httpx.DecodingError) as exc:
                return _upstream_failed(expert, state.experts[expert], exc)
            finally:
                await response.aclose()
        headers = {**_relayed_headers(response), "x-ir3de-expert": expert}
        if confidence is not None:
            headers["x-ir3de-confidence"] = f"{confidence:.4f}"
        if coverage is not None:
            headers["x-ir3de-coverage"] = f"{coverage:.4f}"
        metrics.requests.labels(expert, str(response.status_code)).inc()
        log.info(json.dumps({"path": path, "model": model, "expert": expert, "routed_to": tried,
                             "confidence": confidence, "coverage": coverage,
                             "status": response.status_code,
                             "stream": stream}))
        media = response.headers.get("content-type", "application/json")
        if not stream or response.status_code >= 400:  # read whole above or by _send
            return Response(response.content, status_code=response.status_code,
                            media_type=media, headers=headers)

        async def chunks() -> AsyncIterator[bytes]:
            # (no cleanup here: _Relay closes the upstream response, whether or not this
            # generator ever started)
            # Decoded bytes (aiter_bytes, not aiter_raw): a gzipped upstream stream would
            # reach the client compressed, without its content-encoding. Relayed event by
            # event: should the upstream break off in the middle of one, the half sent
            # would run into the error event below and the client could parse neither.
            pending = bytearray()
            try:
                async for chunk in response.aiter_bytes():
                    start = max(len(pending) - 2, 0)  # an event end may span two chunks
                    pending += chunk
                    end = _whole_events(pending, start)
                    if end:
                        yield bytes(pending[:end])
                        del pending[:end]
                if pending:  # an upstream that ends without a blank line: keep it all
                    yield bytes(pending)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # The status line is long gone: the one way left to tell the client is an
                # SSE event, which OpenAI clients raise as an APIError.
                metrics.errors.labels(expert, f"stream_{type(exc).__name__}").inc()
                message = f"expert {expert!r} broke off the stream ({type(exc).__name__})"
                yield b"event: error\ndata: " + json.dumps({"error": {
                    "message": message, "type": "upstream_error", "param": None,
                    "code": None}}).encode() + b"\n\n"

        return _Relay(chunks(), response, status_code=response.status_code,
                      media_type=media, headers=headers)

    class _Relay(StreamingResponse):
        """An upstream stream relayed to the client. However the response ends (last
        chunk, client gone, error, cancellation) the upstream response is closed and the
        stream stops counting as in flight, once, as the response ends.

        The body generator's own ``finally`` could not promise that: Starlette does not
        close a body iterator it stops iterating, nor run ``background`` when the send
        fails. Under ASGI >= 2.4 a client gone before the first chunk makes the first send
        (the headers) raise ClientDisconnect before the generator has started, so its
        ``finally`` never runs, not even when it is garbage-collected; a client gone
        mid-stream leaves it suspended at a ``yield`` until garbage collection. Meanwhile
        the upstream would generate for nobody and hold a pooled connection.
        """

        def __init__(self, content: Any, upstream: httpx.Response, **kwargs: Any) -> None:
            super().__init__(content, **kwargs)
            self.chunks = content
            self.upstream = upstream

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            metrics.in_flight.inc()  # until the last chunk, not until the headers
            try:
                await super().__call__(scope, receive, send)
            finally:
                try:
                    # shielded: a cancelled request must still let go of its upstream
                    with anyio.CancelScope(shield=True):
                        await self.chunks.aclose()  # a no-op once finished or unstarted
                        await self.upstream.aclose()  # a no-op once closed
                finally:
                    metrics.in_flight.dec()

    def _upstream_failed(expert: str, endpoint: Any, exc: Exception, before: str = "",
                         after: str = "") -> Any:
        if isinstance(exc, httpx.TimeoutException):
            status, what = 504, f"did not answer within {endpoint.timeout:g} s"
        elif isinstance(exc, httpx.DecodingError):
            status, what = 502, "sent an answer its content-encoding does not describe"
        else:
            status, what = 502, "is unreachable"
        metrics.requests.labels(expert, str(status)).inc()
        return _error(status, f"{before}expert {expert!r} {what} ({type(exc).__name__})"
                              f"{after}", kind="upstream_error")

    async def _counted(request: Request, path: str, chat: bool) -> Any:
        metrics.in_flight.inc()
        try:
            response = await _proxy(request, path, chat)
        finally:
            metrics.in_flight.dec()
        if "x-ir3de-expert" not in response.headers and response.status_code < 500:
            metrics.requests.labels("(gateway)", str(response.status_code)).inc()
        return response

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _counted(request, "/chat/completions", True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _counted(request, "/completions", False)

    def _model_card(name: str, now: int) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": now, "owned_by": "ir3de"}

    @app.get("/v1/models")
    async def models() -> Any:
        state = holder["state"]
        now = int(time.time())
        return {"object": "list", "data": [_model_card(name, now)
                                           for name in [config.name, *state.experts]]}

    @app.get("/v1/models/{model:path}")  # client.models.retrieve(); :path: org/model names
    async def model_info(model: str) -> Any:
        if model != config.name and model not in holder["state"].experts:
            return _error(404, f"model {model!r} does not exist", code="model_not_found",
                          param="model")
        return _model_card(model, int(time.time()))

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> Any:
        state = holder["state"]
        # 200 all the same: the gateway is up, and serves what it can; the experts that
        # refuse requests now, with the seconds until each is tried again
        return {"status": "ok", "experts": state.router.experts,
                "cooling_down": {n: round(s, 3) for n, s in cooldowns.refusing().items()}}

    @app.get("/metrics")
    async def prometheus() -> Any:
        import prometheus_client as pc

        return Response(pc.generate_latest(metrics.registry), media_type=pc.CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------- admin API
    def _auth(request: Request) -> Any:
        if admin_token is None:
            return _error(404, "the admin API is off (no admin token configured)",
                          code="admin_disabled")
        presented = request.headers.get("authorization", "").encode()
        # constant time: the comparison must not tell an attacker how much of a guess matched
        if not hmac.compare_digest(presented, f"Bearer {admin_token}".encode()):
            return _error(401, "missing or wrong admin bearer token", kind="authentication_error",
                          headers={"www-authenticate": "Bearer"})
        return None

    def _describe(state: _State) -> dict[str, Any]:
        counts = {n: s.n_tokens for n, s in state.router.stats.items()}
        return {"experts": [{"name": n, "url": e.url, "model": e.model or n,
                             "routed": n in counts, "tokens": counts.get(n),
                             **cooldowns.describe(n)}
                            for n, e in state.experts.items()],
                "threshold": state.threshold, "min_coverage": state.min_coverage,
                "model": state.router.config.model,
                "alpha": state.router.config.alpha, "pairs": state.router.config.pairs,
                "k": state.router.config.k,
                "lam": state.router.config.lam, "selector": state.router.config.selector}

    async def _swap(build: Any) -> Any:
        """Build the next state off the event loop, persist it, then swap it in."""
        async with admin_lock:
            try:
                new = await run_in_threadpool(build, holder["state"])
            except _UnknownExpert as exc:
                return _error(404, str(exc), code="expert_not_found")
            except (_Err, ValueError, TypeError) as exc:
                return _error(400, str(exc))
            try:
                await run_in_threadpool(_persist, new, config.state_dir)
            except (OSError, ValueError, _Err) as exc:  # ValueError: a number JSON lacks
                # not swapped in: what serves requests is what a restart would load
                return _error(500, f"the change was not applied: cannot save the gateway "
                                   f"state to {config.state_dir} ({exc})", kind="server_error")
            holder["state"] = new
            cooldowns.sync(new.experts)  # (no await in between: no request sees one alone)
            return JSONResponse(_describe(new))

    @app.get("/admin/experts")
    async def admin_list(request: Request) -> Any:
        return _auth(request) or _describe(holder["state"])

    @app.post("/admin/experts")
    async def admin_add(request: Request) -> Any:
        denied = _auth(request)
        if denied:
            return denied
        from .statistics import DomainStats

        form = await request.form()
        upload, name, url = form.get("stats"), form.get("name"), form.get("url")
        if upload is None or not hasattr(upload, "read") or not isinstance(url, str):
            return _error(400, "send multipart fields 'stats' (a statistics file) and 'url' "
                               "(the expert's base URL), optionally 'name', 'model', "
                               "'api_key_env', 'timeout'")
        files = [f for f in ("name", "model", "api_key_env", "timeout")
                 if f in form and not isinstance(form[f], str)]
        if files:
            return _error(400, f"send {', '.join(map(repr, files))} as text fields, not files")
        if name:
            try:
                _check_expert_name(name, config.name)
            except _Err as exc:
                return _error(400, str(exc), param="name")
        data = await upload.read()
        expert_cls = _models()[0]
        pd = _pydantic()
        try:
            # timeout as sent: the model parses it, refusing inf, nan and numbers <= 0
            endpoint = expert_cls(url=url, model=form.get("model") or None,
                                  api_key_env=form.get("api_key_env") or None,
                                  timeout=form.get("timeout") or 60.0)
        except pd.ValidationError as exc:
            fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            return _error(400, f"invalid expert endpoint: {_problems(exc)}",
                          param=fields.pop() if len(fields) == 1 else None)

        def build(state: _State) -> _State:
            with tempfile.TemporaryDirectory() as tmp:  # DomainStats reads from a path
                path = Path(tmp) / "upload.stats"
                path.write_bytes(data)
                try:
                    stats = DomainStats.load(path)
                except _Err as exc:  # the temporary path would only confuse the client
                    raise _Err(str(exc).replace(str(path), "the uploaded 'stats' file")) \
                        from None
            expert = name or stats.domain
            _check_expert_name(expert, config.name)
            router = _copy_router(state.router)
            router.add_expert(expert, stats)
            return replace(state, router=router, experts={**state.experts, expert: endpoint})

        return await _swap(build)

    @app.delete("/admin/experts/{name:path}")  # :path: model names like org/model
    async def admin_remove(name: str, request: Request) -> Any:
        denied = _auth(request)
        if denied:
            return denied

        def build(state: _State) -> _State:
            if name not in state.experts:  # 404; the refusals below are 400s
                raise _UnknownExpert(f"unknown expert {name!r}; experts are: "
                                     f"{', '.join(state.experts)}")
            if name == config.fallback:
                raise _Err(f"cannot remove {name!r}: it is the fallback expert")
            router = state.router
            if name in router.experts:  # an endpoint the router does not route to has none
                router = _copy_router(router)
                router.remove_expert(name)
            return replace(state, router=router,
                           experts={n: e for n, e in state.experts.items() if n != name})

        return await _swap(build)

    @app.patch("/admin/settings")
    async def admin_settings(request: Request) -> Any:
        denied = _auth(request)
        if denied:
            return denied
        try:
            changes = _parse_json(await request.body())
        except ValueError as exc:
            return _error(400, str(exc))
        cuts = ("threshold", "min_coverage")
        allowed = {"alpha", "k", "lam", "pairs", "selector", *cuts}
        if not isinstance(changes, dict) or not changes or set(changes) - allowed:
            return _error(400, f"send a JSON object with some of {sorted(allowed)}")

        def build(state: _State) -> _State:
            values = {}
            for cut in cuts:
                value = changes.get(cut, getattr(state, cut))
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not 0.0 <= value <= 1.0:
                    raise _Err(f"{cut} must be a number in [0, 1], got {value!r}")
                values[cut] = float(value)
            params = {k: v for k, v in changes.items() if k not in cuts}
            config = state.router.config.with_settings(**params)
            ignored = config.ignored(params)
            if ignored is not None:  # accepted, it would change nothing: say so instead
                key, setting, needed = ignored
                raise _Err(f"{key} applies to {setting} {needed} only; the router would use "
                           f"{setting} {getattr(config, setting)}")
            router = _copy_router(state.router)
            router.set_params(**params)
            return replace(state, router=router, **values)

        return await _swap(build)

    return app


class _UnknownExpert(IR3DEError):
    """An admin change names an expert the gateway does not have (a 404, not a 400)."""


def _copy_router(router: Any) -> Any:
    """A router that can be changed without touching ``router``.

    A shallow copy suffices: a Router's solved state and statistics are never mutated in
    place, every change assigns new ones, so the copy's changes stay its own.
    """
    return copy.copy(router)
