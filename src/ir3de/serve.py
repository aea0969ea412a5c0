"""An OpenAI-compatible gateway that routes each request to a domain-expert LLM server.

``ir3de serve --config gateway.yaml`` (extra ``ir3de[serve]``; :func:`serve`) starts an
ASGI app in front of any OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp, TGI,
...):

* ``POST /v1/chat/completions`` and ``POST /v1/completions``: with ``model`` set to the
  gateway's name the prompt is routed; with an expert's name it goes straight there, and
  only there. The upstream answer is passed through unchanged (``stream: true`` as SSE,
  event by event; its content type as the upstream sent it, or none) with headers
  ``x-ir3de-expert`` (the expert that answered), and for routed requests
  ``x-ir3de-routed-to`` (the router's pick), ``x-ir3de-confidence`` (the router's
  confidence in that pick) and (routers with a pair table) ``x-ir3de-coverage``; when the
  fallback expert answered instead, ``x-ir3de-fallback`` says why: ``low_confidence``,
  ``low_coverage``, ``no_text`` (nothing to route on, an image or special tokens such as
  ``<s>`` alone: no ``x-ir3de-routed-to`` then; a 400 without a fallback), ``expert_down``
  (the pick is cooling down) or ``upstream_failure`` (the pick failed), the reasons of
  ``ir3de_fallbacks_total``. The gateway's own 502, 503 and 504 answers name the expert
  they were meant for in ``x-ir3de-expert`` too. An expert name that is not printable ASCII, or
  holds a ``%``, is percent-encoded (UTF-8) in these headers: ``数学`` as
  ``%E6%95%B0%E5%AD%A6``, ``cs%2Fv2`` as ``cs%252Fv2`` (``urllib.parse.unquote`` gives every
  name back). The upstream's headers that OpenAI clients act on (``retry-after``,
  ``x-should-retry``, ``x-request-id``, rate limits, ``openai-*`` but the operator's
  ``openai-organization`` and ``openai-project``) are relayed, but for a value outside
  Latin-1, which no header can carry (it is dropped).
* ``GET /v1/models`` (``created``: when the gateway started, or the admin API added the
  expert), ``GET /v1/models/{id}``, ``GET /healthz`` (always 200; lists the experts
  cooling down), ``GET /metrics`` (Prometheus).
* One JSON access-log line per request (INFO: at ``--log-level`` info or debug),
  whatever its route and status, as the answer's last byte goes out (see
  :class:`_AccessLog`): ``request_id``, ``path`` (less ``/v1``), ``method``, ``client``,
  ``status``, ``duration_ms``, ``bytes``, ``complete`` (false: not sent to its end), and
  ``refused`` (the reason) for a 401; a completions request's also has ``model``,
  ``expert``, ``routed_to``, ``fallback``, ``confidence``, ``coverage``, ``stream``, and
  ``error`` for the gateway's own error answers; ``status`` 499 (as nginx logs it) for a
  client gone before its whole body arrived, or before its answer (the upstream request
  is cancelled then), which is sent nothing. A body over ``max_body_bytes`` (an admin
  request's: over ``max_admin_body_bytes``) is a 413 as soon as it says so
  (``content-length``) or, chunked, once past the limit, without the rest; a compressed
  one (``content-encoding``) is a 415. A completions body over 64 KiB is parsed in a
  reader process (:func:`_read_large`), so it does not hold the event loop.
* Request ids: the client's plain ``x-request-id`` or a new ``req_<hex>``, logged, sent
  to the expert as ``x-request-id`` (a client's with a suffix that makes it unique, as
  vLLM refuses an id already running) and returned as ``x-ir3de-request-id`` (and as
  ``x-request-id`` unless the expert's is relayed).
* ``cors_origins``: web pages on these origins may call the API (:class:`_Cors`); never
  the admin API.
* Client API keys: with ``api_keys_env`` set, the environment variable it names holds one
  or more keys (comma-separated), and every request but ``/healthz``, ``/metrics`` and the
  admin API (which has its own token) must carry ``Authorization: Bearer <one of them>``,
  or gets a 401 (``code: invalid_api_key``, the SDK's ``AuthenticationError``). An unset
  or empty variable, or an empty key in it, stops the gateway at startup. The client's
  ``Authorization`` header is never forwarded: experts get their own ``api_key_env``,
  whose variable must be set (and not empty) too: at startup, and when the admin API adds
  the expert (a 400 otherwise). The admin API may name only a variable that gateway.yaml
  names as an expert's ``api_key_env`` or lists under ``admin_key_envs`` (else a 400, and
  a saved one no longer allowed stops a restart): its token must not reveal every secret
  of the gateway's environment. The gateway's own ``api_keys_env`` and
  ``admin_token_env`` are never an expert's key.
* ``/admin/...`` behind a bearer token (from the environment variable named in the
  config; unset -> the admin API is off; refusals counted in
  ``ir3de_admin_unauthorized_total``): list experts (with their cooldown state), add
  (an existing name, routed or not, is a 409; a name with a control or invisible
  character (a newline, a zero-width space) or not in Unicode NFC is a 400, as it is a
  startup error in the config; with ``trust`` set, an upload not signed by one of its
  keys, changed after signing or renamed, is a 403, and the router the gateway starts
  from must be signed throughout) and remove them (a
  removed expert's failures are forgotten), change α, k, λ, selector, the confidence
  threshold or the minimum coverage (above 0 only with a fallback expert). Every change
  re-solves the router off the event loop, swaps it in one assignment (requests in
  flight finish on the router they started with), persists it atomically to
  ``state_dir`` (a change a crash cuts between its two files is undone at the restart:
  :func:`_recover_router`) and is logged (one JSON line, ``"event": "admin"``, with no secret).

Config and saved state: a restart loads ``state_dir`` back and merges it with
gateway.yaml, three ways (see :func:`_reconcile`): a value edited in gateway.yaml since the
gateway last started wins; any other value the saved state holds (an admin API change)
is kept. That covers ``threshold``, ``min_coverage``, the expert endpoints and each of
their fields, and the router: one whose section or files changed is rebuilt from
gateway.yaml, with the admin API's changes applied to it again. Every disagreement is
logged as a warning (``"event": "config_vs_state"``) naming the field, both values and
the one used. A saved ``min_coverage`` that the router gateway.yaml has changed to cannot
use (one without coverage, such as ``preset: unigram``) goes, with such a warning: the
file's edit wins. Removing ``state_dir`` starts from gateway.yaml alone. ``serve`` claims
``state_dir`` (:func:`ir3de.store.claim_folder`): a second gateway on it, or one that
cannot be written, stops at startup.

Stopping (SIGTERM, SIGHUP, Ctrl-C): no new connections; what is in flight may finish,
for at most ``shutdown_seconds`` when it is set. Then a request still waiting for its
answer gets a 503 (``code: shutting_down``, ``retry-after: 1``) and a stream ends with the
SSE ``error`` event below (see :class:`_AccessLog`).

Failures: a refused connection is retried once (the expert may be restarting), and so is
a request on a reused idle connection that the expert closed before answering, within
0.5 s (the keep-alive race; a request on a new connection, answered even in part, or held
longer, is not sent twice). For a routed request, a second failure or a timeout sends the
request to the fallback expert (or, where the fallback was chosen over the router's pick
for low confidence or coverage, to that pick; a second expert gets a request id of its
own). A request that names its expert may carry what that expert alone accepts: it never
goes to another one, and gets a 502 (504 for a timeout)
naming the expert, as routed requests do without a fallback; the message tells an expert
that is unreachable (no connection; a TLS failure by its OpenSSL reason) from one that
sent a malformed or truncated answer (or closed the connection without one). Any other
error while sending is such a failure too, and each is logged with its whole cause and
the request's id (``"event": "upstream_error"``), as is a stream that breaks off after
its 200 (whose access line then carries the ``error``). An expert's ``timeout`` bounds
the wait for a connection and, for a whole (non-streaming) answer, the answer itself: all
of it must arrive within ``timeout`` of the request being sent; a stream's headers and
its first bytes too (else it is a timeout, with the fallback), and then each of its
reads; an error answering a stream is read whole, within ``timeout`` of the request being
sent. An answer that cannot be decoded,
or whose status is beyond 599 (``HTTP/1.1 999``) or a redirect (3xx: not followed, as the
request would go again, perhaps to another host; the 502 names where it points), is a 502
(no fallback: the expert did answer); so is a whole answer over ``max_answer_bytes``,
counted decoded and as it arrives, as a gzip answer of a few MB may decode to GBs. A
stream is relayed event by event, each held until it ends: one over ``max_answer_bytes``
(or one that never ends) ends the client's stream with the SSE ``error`` event below and
closes the expert's connection. A request that waits its expert's whole ``timeout`` for
one of the ``max_connections`` upstream connections is not sent: a 503 (``code:
gateway_busy``, ``retry-after: 1``), without trying the fallback (it would wait for the
same connections) and without counting against the expert's cooldown. An answer whose
status is in ``fallback_statuses`` (default 502, 503, 504: a load balancer's answer for
an expert that is down) is a failure too, for the fallback and the cooldown; relayed as
it came when there is no fallback to try. Any other upstream HTTP
error is returned as is, but a 401 or 403, which refuses the gateway's own credentials
(the client's are never forwarded), is a 502 naming the expert; a stream cut by the
upstream ends with an SSE ``error`` event, after the last whole event. The gateway's own
errors, unknown routes included, use OpenAI's error JSON (``{"error": {"message", "type",
"param", "code"}}``). An HTTPS expert's certificate is checked against certifi's CA
bundle, or, when set, ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` (a private CA's: httpx reads
them when the gateway starts).

Cooldowns: finding out that an expert is down costs each request a refused connection
and its retry, or the expert's whole ``timeout``. After ``cooldown_failures`` such
failures in a row (other upstream HTTP errors are answers and do not count), the expert gets
no requests for ``cooldown_seconds``: routed ones go straight to the fallback (reason
``expert_down``; where the fallback is the one cooling down and was chosen over the
router's pick, to that pick), and those that name it, or have no such expert to go on to
that is not itself cooling down, get a 503 (``code: expert_unavailable``) with
``retry-after``. Then one request tries it: an answer brings it back, a failure starts the
next cooldown at once, and the other requests are treated as during the cooldown until
then. Any answer resets the count. ``cooldown_failures: 0`` turns cooldowns off.

Example config::

    name: ir3de
    router: {path: router.safetensors}        # or {stats: [math.stats, code.stats]}
    #   preset: default          # with stats: the named configuration
    #   settings: {pairs: 1e4}   # RouterConfig's settings over the preset's or saved router's
    experts:                   # url: a query (?api-version=...) is kept; no #fragment
      math:   {url: http://127.0.0.1:8001/v1, model: qwen-math}
      coding: {url: http://127.0.0.1:8002/v1, api_key_env: CODER_KEY, timeout: 120}
    #   azure: {url: https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21,
    #           api_key_env: AZURE_KEY, api_key_header: api-key}   # the key as is, in api-key
    # (a url's user:password@ is sent as Basic authorization: refused with api_key_env)
    fallback: math
    policy: last_user          # all_user | conversation
    threshold: 0.0             # below this confidence, use the fallback (> 0: needs one)
    min_coverage: 0.0          # below this share of seen token pairs, use the fallback
    state_dir: gateway-state   # where admin changes persist
    api_keys_env: IR3DE_API_KEYS   # clients must send one of these keys (default: no keys)
    admin_token_env: IR3DE_ADMIN_TOKEN   # the admin API's token (unset: admin API off)
    admin_key_envs: [SPARE_KEY]   # api_key_env the admin API may name, beyond the experts'
    cors_origins: [https://chat.example.com]   # web pages here may call the API ('*': any)
    # trust: trusted/          # every expert (stats, saved router, uploads) signed by a key
                               # here: for a router of signed statistics only
    cooldown_failures: 3       # failures in a row before an expert cools down (0: never)
    cooldown_seconds: 30       # ... for this long
    fallback_statuses: [502, 503, 504]   # answers that are failures (a proxy's "expert down")
    max_connections: 1000      # upstream connections open at once, over all experts
    max_body_bytes: 1000000    # a client's request body, at most
    max_answer_bytes: 33554432   # an expert's answer (decoded), or a stream's event, at most
    max_admin_body_bytes: 268435456   # an admin request's body (a statistics upload), at most
    keep_alive_seconds: 75     # an idle client connection, or one whose request head or
                               # body, or answer it reads, stops moving, is closed after
                               # this long
    upstream_keep_alive_seconds: 4  # an idle upstream connection is reused this long
    shutdown_seconds: 60       # on SIGTERM, streams in flight may run this long (unset: no limit)
"""

import asyncio
import contextlib
import contextvars
import copy
import dataclasses
import datetime
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
import signal
import ssl
import sys
import tempfile
import threading
import time
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .errors import EmptyInputError, IR3DEError, is_blank, require_file
from .statistics import domain_name_problem, find_identical

__all__ = ["create_app", "load_config", "serve"]

log = logging.getLogger("ir3de.access")

_ROUTER_FILE = "router.safetensors"
_EXPERTS_FILE = "experts.json"
_ROUTER_DIGEST = "router_sha256"  # in experts.json: the router file it was saved with
# the key in experts.json under which gateway.yaml's values are saved (see _reconcile)
_BASE_KEY = "config"


def _pydantic() -> Any:
    try:
        import pydantic
    except ImportError:
        raise IR3DEError("the gateway needs its extra: pip install 'ir3de[serve]'") from None
    return pydantic


# A web origin as browsers send it in the Origin header (see GatewayConfig.cors_origins)
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:?#\[\]]+)(:\d{1,5})?")
# The answer headers a browser page may read across origins (CORS hides any other): the
# gateway's own and the upstream's that OpenAI clients act on (see _RELAYED_HEADERS)
_EXPOSED_HEADERS = ("x-ir3de-expert", "x-ir3de-routed-to", "x-ir3de-confidence",
                    "x-ir3de-coverage", "x-ir3de-fallback", "x-ir3de-request-id",
                    "x-request-id", "retry-after", "retry-after-ms", "x-should-retry")

# Headers of an upstream request that the gateway (or httpx) sets: no key goes in them.
_OWN_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding",
                          "connection", "accept-encoding", "te", "upgrade", "x-request-id"})


@functools.cache
def _models() -> tuple[type[Any], type[Any], type[Any]]:
    """The config models (built lazily, once: pydantic is an optional dependency). Made in
    here, they have no name an annotation could use: the configs they validate are Any
    throughout this module."""
    _pydantic()  # refuses, naming the extra, when pydantic is missing
    import pydantic as pd

    class ExpertConfig(pd.BaseModel):
        model_config = pd.ConfigDict(extra="forbid")
        url: str = pd.Field(description="base URL of the OpenAI-compatible API, e.g. "
                                        "http://host:8000/v1")
        model: str | None = pd.Field(None, description="upstream model name (default: the "
                                                       "expert's name)")
        api_key_env: str | None = None
        api_key_header: str | None = pd.Field(
            None, description="the header that carries api_key_env's key as is (Azure "
                              "OpenAI: api-key); default: authorization: Bearer KEY")
        # finite: an infinite timeout would be saved to experts.json as Infinity, which
        # is not JSON
        timeout: float = pd.Field(60.0, gt=0, allow_inf_nan=False,
                                  description="seconds to wait for the expert's answer")

        @pd.field_validator("url")
        @classmethod
        def _http(cls, v: str) -> str:
            from urllib.parse import urlsplit, urlunsplit

            import httpx

            # Refused here, naming the expert, rather than at its first request: httpx
            # would send the spaces percent-encoded, as part of the host or path.
            if v != v.strip():
                raise ValueError(f"url must not start or end with whitespace, got {v!r}")
            if not v.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, got {v!r}")
            parts = urlsplit(v)
            if not parts.hostname:
                raise ValueError(f"url names no host: {v!r}")
            try:  # (httpx takes port 99999, and every request then failed with a traceback)
                port = parts.port
            except ValueError as exc:  # not a number, or above 65535
                raise ValueError(f"url has an invalid port ({exc}); a port is a number "
                                 "from 1 to 65535") from None
            if port == 0:
                raise ValueError("url has an invalid port (0); a port is a number from 1 to "
                                 "65535")
            if "#" in v:  # a fragment is never sent: what follows # would be lost
                raise ValueError(f"url must not hold a fragment ('#...'), got {_safe_url(v)!r}")
            # the API paths are appended to the URL's path, before its query (kept:
            # ?api-version= and the like), so a trailing slash on the path goes
            url = urlunsplit(parts._replace(path=parts.path.rstrip("/")))
            try:  # whatever else httpx, which sends the requests, would refuse
                httpx.URL(url)
            except httpx.InvalidURL as exc:
                raise ValueError(f"url is not one httpx can send to ({exc})") from None
            return url

        @pd.field_validator("api_key_env")
        @classmethod
        def _one_credential(cls, v: str | None, info: Any) -> str | None:
            from urllib.parse import urlsplit

            # httpx sends a URL's user:password@ as Basic authorization, which replaces
            # the Bearer key of api_key_env: the expert would get the password and never
            # the key configured for it. (A URL with credentials alone stays allowed:
            # Basic authorization in front of an expert, a reverse proxy's, is what it
            # is for; logs and listings hide them.)
            url = info.data.get("url")  # (absent when the url itself was refused)
            if v is not None and url is not None:
                parts = urlsplit(url)
                if parts.username or parts.password:
                    raise ValueError(
                        "the url holds credentials (user:password@), which httpx sends as "
                        "Basic authorization in place of api_key_env's Bearer key: give "
                        "one or the other")
            return v

        @pd.field_validator("api_key_header")
        @classmethod
        def _key_header(cls, v: str | None, info: Any) -> str | None:
            if v is None:
                return v
            if info.data.get("api_key_env") is None:
                raise ValueError("api_key_header names the header of api_key_env's key: "
                                 "set api_key_env too")
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", v):
                raise ValueError(f"api_key_header must be an HTTP header name, got {v!r}")
            if v.lower() in _OWN_HEADERS:
                raise ValueError(f"api_key_header must not be {v!r}, which the gateway "
                                 "sets itself")
            return v.lower()

    from .router import RouterConfig

    # Typed from RouterConfig itself, so every setting of the Python API is here under its
    # name. Strict, so that YAML's `yes` is not taken for k = 1; but a number written as
    # text ("1e4", as `ir3de build --pairs` takes it) is taken for a setting that is a
    # number (_command_words).
    hints = typing.get_type_hints(RouterConfig)
    numbers = {name for name, hint in hints.items() if float in typing.get_args(hint)
               or hint is float}
    settings: dict[str, Any] = {f.name: (hints[f.name] | None, None)
                                for f in dataclasses.fields(RouterConfig)}
    RouterSettings = pd.create_model(
        "RouterSettings", __config__=pd.ConfigDict(extra="forbid", strict=True), **settings)

    class RouterSource(pd.BaseModel):
        model_config = pd.ConfigDict(extra="forbid")
        path: str | None = None
        stats: list[str] | None = pd.Field(None, min_length=1)
        embedder: str | None = None
        preset: str = "default"
        settings: RouterSettings | None = pd.Field(  # type: ignore[valid-type]
            None, description="router settings over the preset's (stats) or the saved "
                              "router's (path), e.g. {pairs: 1e4}; null for pairs, skips "
                              "or identity turns them off")

        @pd.field_validator("settings", mode="before")
        @classmethod
        def _command_words(cls, value: Any) -> Any:
            # the command line's words: "none" for off (--pairs none), numbers as 1e4
            if isinstance(value, dict):
                return {k: _setting_word(v) if k in numbers else v for k, v in value.items()}
            return value

        @pd.model_validator(mode="after")
        def _one(self) -> "RouterSource":
            if (self.path is None) == (self.stats is None):
                raise ValueError("give exactly one of router.path (a saved router) and "
                                 "router.stats (statistics files)")
            if self.path is not None and "preset" in self.model_fields_set:
                # (it was read nowhere: a saved router keeps the settings it was built with)
                raise ValueError("router.preset applies to router.stats only; a saved router "
                                 "(router.path) keeps the settings it was built with, and "
                                 "router.settings changes them")
            if self.stats is not None:
                try:  # the settings and the preset they apply to, checked before any work
                    _stats_config(self)
                except IR3DEError as exc:
                    raise ValueError(str(exc)) from None
            return self

        def overrides(self) -> dict[str, Any]:
            """The settings gateway.yaml names (an explicit null included)."""
            return {} if self.settings is None else \
                self.settings.model_dump(exclude_unset=True)

    # A count in gateway.yaml may be written as a float that is a whole number (1e6, which
    # _yaml_loader reads as a float): taken for that integer, where the field is strict
    # (it refuses YAML's `yes`) and would refuse any float.
    Whole = typing.Annotated[int, pd.BeforeValidator(
        lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]

    class GatewayConfig(pd.BaseModel):
        model_config = pd.ConfigDict(extra="forbid")
        name: str = pd.Field("ir3de", description="the model clients send to be routed")
        router: RouterSource
        experts: dict[str, ExpertConfig]
        fallback: str | None = None
        policy: Literal["last_user", "all_user", "conversation"] = "last_user"
        threshold: float = pd.Field(0.0, ge=0.0, le=1.0)
        min_coverage: float = pd.Field(0.0, ge=0.0, le=1.0)
        max_body_bytes: Whole = pd.Field(1_000_000, gt=0, strict=True)
        # An expert's answer is held in memory before it is relayed (a whole answer; an
        # SSE event of a stream until it ends): bounded, counted after decompression, as a
        # gzip answer of a few MB may decode to GBs.
        max_answer_bytes: Whole = pd.Field(32 * 1024 * 1024, gt=0, strict=True,
                                           description="the largest answer an expert may "
                                                       "send (decoded), and the largest "
                                                       "SSE event of its streams")
        # The admin API's bodies (statistics uploads, settings), held in memory too. Real
        # statistics files are a few MB (MBPP 1.2 MB, GSM8K 2.7 MB; the pair table grows
        # with the corpus): the default leaves ample room for large corpora.
        max_admin_body_bytes: Whole = pd.Field(256 * 1024 * 1024, gt=0, strict=True,
                                               description="the largest body of an admin "
                                                           "API request (a statistics "
                                                           "upload)")
        max_connections: Whole = pd.Field(1000, gt=0, strict=True,
                                        description="upstream connections open at once, "
                                                    "over all experts")
        admin_token_env: str | None = "IR3DE_ADMIN_TOKEN"
        api_keys_env: str | None = pd.Field(None, min_length=1,
                                            description="environment variable holding the "
                                                        "client API keys, comma-separated")
        # The admin API may send only these variables, and those the experts above name
        # as api_key_env, to the URL it gives: holding the admin token must not reveal
        # every secret in the gateway's environment.
        admin_key_envs: list[str] = pd.Field([], description="further environment "
                                             "variables POST /admin/experts may name as "
                                             "api_key_env")
        state_dir: str | None = None
        # The federation's guard at the gateway: without it an admin token holder could add
        # any party's statistics, signed or not, where `ir3de build --trust` would refuse them.
        trust: str | None = pd.Field(None, min_length=1,
                                     description="folder of trusted public keys (*.pub): "
                                                 "every expert's statistics (router.stats, a "
                                                 "saved router, POST /admin/experts uploads) "
                                                 "must be signed by one")
        # strict: YAML reads `yes` as true, which would otherwise pass as 1 failure or 1 s
        cooldown_failures: Whole = pd.Field(3, ge=0, strict=True,
                                          description="consecutive failures (refused "
                                                      "connections, timeouts) after which "
                                                      "an expert cools down; 0: never")
        cooldown_seconds: float = pd.Field(30.0, gt=0, allow_inf_nan=False, strict=True,
                                           description="how long an expert that keeps "
                                                       "failing gets no requests")
        # A load balancer or ingress in front of an expert answers 502, 503 or 504 when the
        # expert behind it is down or overloaded: that is the expert failing, not
        # answering, and should reach the fallback and its cooldown as a refused
        # connection does (an error the expert itself sends, 400 or 500, stays an answer).
        fallback_statuses: list[typing.Annotated[int, pd.Strict()]] = pd.Field(
            [502, 503, 504], max_length=200,
            description="expert HTTP statuses that count as failures: the fallback for "
                        "routed requests, cooldowns")
        # Longer than the idle expiry of the clients and proxies in front (httpx and the
        # openai SDK: 5 s; AWS ALB, nginx upstream keep-alive: 60 s), so that they close an
        # idle connection first: a server closing it as a client reuses it fails that
        # request (uvicorn's own 5 s met httpx's 5 s: bench_keepalive.py).
        keep_alive_seconds: Whole = pd.Field(75, gt=0, strict=True,
                                           description="how long an idle client "
                                                       "connection, or one whose request "
                                                       "head or body, or answer it reads, "
                                                       "stops moving, is kept open (s)")
        # The same race the other way round: the experts' servers close idle connections
        # after 5 s (uvicorn, so vLLM; llama.cpp's server; Node), and a connection the
        # gateway reuses as one closes it fails that attempt (bench_keepalive.py; the
        # request is then sent again, once: _retried). Dropping idle connections before the
        # server does avoids the extra round trip.
        upstream_keep_alive_seconds: float = pd.Field(4.0, gt=0, allow_inf_nan=False,
                                                      strict=True,
                                                      description="how long the gateway "
                                                                  "reuses an idle upstream "
                                                                  "connection (s)")
        # Browser front-ends on other origins call the API directly: without these CORS
        # headers the browser hides every answer from them (and a preflight would need a key).
        cors_origins: list[str] = pd.Field([], description="origins (scheme://host[:port]) "
                                           "whose web pages may call the API, or ['*'] for "
                                           "any; default: none")
        # uvicorn's own default unless set (wait for every request): an LLM stream may run
        # for minutes, so a deployment chooses how long a stop may take.
        shutdown_seconds: float | None = pd.Field(None, gt=0, allow_inf_nan=False,
                                                  strict=True,
                                                  description="on SIGTERM or Ctrl-C, how long "
                                                              "requests and streams in flight "
                                                              "may still run (unset: until "
                                                              "they end)")

        @pd.field_validator("name")
        @classmethod
        def _name(cls, v: str) -> str:
            problem = domain_name_problem(v)
            if problem:  # clients could not send it as their model, or not reliably
                raise ValueError(f"the gateway's name {v!r} {problem}")
            return v

        @pd.field_validator("cors_origins")
        @classmethod
        def _origins(cls, v: list[str]) -> list[str]:
            for origin in v:
                if origin != "*" and not _ORIGIN.fullmatch(origin):
                    # A browser sends Origin without a path or trailing slash: such an
                    # entry would never match, and the site would fail with no clue why.
                    raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], "
                                     "without a path or trailing slash (e.g. "
                                     "https://chat.example.com), or '*' for any")
            return v

        @pd.field_validator("fallback_statuses")
        @classmethod
        def _statuses(cls, v: list[int]) -> list[int]:
            for status in v:
                # 2xx-4xx but 429 are answers to this request (a 400 would come back from
                # any expert); 401 and 403 refuse the gateway's key, a 502 of its own
                if status != 429 and not 500 <= status <= 599:
                    raise ValueError(f"{status} is not a status that says the expert is "
                                     "down or overloaded: give 429 or statuses from 500 to "
                                     "599 (the default: [502, 503, 504])")
            return sorted(set(v))

        @pd.model_validator(mode="after")
        def _consistent(self) -> "GatewayConfig":
            if not self.experts:
                raise ValueError("experts: at least one expert endpoint is needed")
            if self.fallback is not None and self.fallback not in self.experts:
                raise ValueError(f"fallback {self.fallback!r} is not one of the experts "
                                 f"({', '.join(self.experts)})")
            for cut in ("threshold", "min_coverage"):
                if getattr(self, cut) > 0 and self.fallback is None:
                    # without a fallback the cut would be accepted and do nothing
                    raise ValueError(f"{cut} sends prompts to the fallback expert: set "
                                     "fallback too")
            if self.name in self.experts:
                raise ValueError(f"name {self.name!r} is also an expert's name")
            for name in self.experts:
                problem = domain_name_problem(name)
                if problem:
                    raise ValueError(f"expert name {name!r} {problem}")
            # The gateway's own secrets never go to an expert: its client keys and admin
            # token would be sent to whoever runs that expert.
            own = {self.api_keys_env: "api_keys_env", self.admin_token_env: "admin_token_env"}
            named = [(f"experts.{n}.api_key_env", e.api_key_env)
                     for n, e in self.experts.items()] + \
                [(f"admin_key_envs[{i}]", env) for i, env in enumerate(self.admin_key_envs)]
            for where, env in named:
                if env is not None and env in own:
                    raise ValueError(f"{where}: {env} is the gateway's own {own[env]}, "
                                     "which is never sent to an expert")
            return self

        def key_envs(self) -> set[str]:
            """The variables the admin API may name as an expert's api_key_env."""
            return {e.api_key_env for e in self.experts.values() if e.api_key_env} | \
                set(self.admin_key_envs)

    return ExpertConfig, RouterSource, GatewayConfig


def _setting_word(value: Any) -> Any:
    """A number setting of gateway.yaml's router as ``ir3de build`` reads it: text that
    is a number (quoted, "1e4") is that number, and ``none`` is None."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        return value  # (refused by the model, naming the setting: "auto" is kept)


def _problems(exc: Any) -> str:
    """A pydantic ValidationError on one line: ``field: message; ...``. A validator's own
    ValueError is given as raised, without pydantic's "Value error, " in front of it (nor
    the field, when the message starts by naming it or a field within it)."""
    said = []
    for e in exc.errors():
        field = ".".join(map(str, e["loc"])) or "(top)"
        message = str(e["ctx"]["error"]) if e["type"] == "value_error" else e["msg"]
        said.append(message if message.startswith(f"{field}.") else f"{field}: {message}")
    return "; ".join(said)


def load_config(path: str | os.PathLike[str]) -> Any:
    """Read and validate a YAML gateway config; errors name the file and the field."""
    import yaml

    pd = _pydantic()
    path = Path(path)
    require_file(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        raise IR3DEError(_yaml_problem(path, exc)) from None
    except UnicodeDecodeError:
        raise IR3DEError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise IR3DEError(f"{path}: expected a mapping at the top level")
    base = path.parent
    try:
        config = _models()[2].model_validate(data)
    except pd.ValidationError as exc:
        raise IR3DEError(f"{path}: invalid config: {_problems(exc)}") from None
    # Relative paths in the config are relative to the config file; ~ is the user's home,
    # as a shell would read it (a path under a folder named "~" is written ./~/...).
    def located(name: str) -> str:
        return str(base / os.path.expanduser(name))  # (Path("./~") would be "~")

    src = config.router
    if src.path is not None:
        src.path = located(src.path)
    if src.stats is not None:
        src.stats = [located(s) for s in src.stats]
    if config.state_dir is not None:
        config.state_dir = located(config.state_dir)
    if config.trust is not None:
        config.trust = located(config.trust)
    return config


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's safe loader, but reading a number in exponent notation (``1e6``,
    ``1.5e6``) as a float, as YAML 1.2 does: PyYAML follows YAML 1.1, whose floats need a
    dot and a signed exponent (``1.0e+6``), and reads the others as text, which a number
    field then refuses."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # (checked after YAML 1.1's own resolvers: integers and 1.0e+6 are resolved as before)
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."))
    return Loader


def _yaml_problem(path: Path, exc: Any) -> str:
    """A YAML error on one line, ``FILE:LINE:COL: not valid YAML: problem`` (PyYAML's own
    message spans several lines and names its input "<unicode string>", not the file)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{problem} ({context})" if context else problem
    return f"{where}: not valid YAML: {' '.join(text.split())}"


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


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it, outermost first: down its causes (httpx's
    errors wrap httpcore's, which wrap the OSError or ssl.SSLError that happened) and into
    the first member of an exception group (anyio's connection attempts)."""
    chain = [exc]
    while True:
        members = getattr(exc, "exceptions", None)  # an exception group's
        # (the context too when it is suppressed: httpcore raises its errors "from None",
        # and the ssl.SSLError is then the context alone)
        inner = members[0] if isinstance(members, tuple) and members else \
            exc.__cause__ or exc.__context__
        if inner is None or any(inner is seen for seen in chain):
            return chain
        chain.append(inner)
        exc = inner


# The keep-alive race ends within a round trip of the request being sent: the expert had
# closed the connection (its end-of-file is already there to read) or resets it on
# receipt. A connection that dies later was reading the request, perhaps generating (an
# expert killed mid-prefill): sending it again would pay for it twice, or crash the
# restarting expert with the same prompt. 0.5 s is a few round trips between continents.
_RACE_SECONDS = 0.5


def _retried(exc: Exception, steps: Mapping[str, float], now: float) -> bool:
    """Whether a failed upstream attempt gets the one retry: a refused connection (the
    expert may be restarting), or an idle connection the expert closed just as the gateway
    reused it, before any answer (the keep-alive race: ``steps``, the attempt's httpcore
    trace events and when they came, show no new connection and no response headers, and
    the failure came at ``now``, within :data:`_RACE_SECONDS` of the request being sent).
    A request on a connection opened for it, one answered even in part, or one the expert
    held for longer is not sent again."""
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return True
    reused = not any(step.endswith(".connect_tcp.started") for step in steps)
    answered = any(step.endswith(".receive_response_headers.complete") for step in steps)
    sent = next((t for step, t in steps.items()
                 if step.endswith(".send_request_headers.started")), now)
    # httpcore's words for end-of-file before a byte of the answer; a reset is a ReadError
    closed = isinstance(exc, httpx.ReadError) or (
        isinstance(exc, httpx.RemoteProtocolError)
        and "disconnected without sending a response" in str(exc))
    return reused and not answered and closed and now - sent <= _RACE_SECONDS


def _trusted_keys(folder: str | None) -> dict[str, str] | None:
    """The ``trust`` folder's public keys (:func:`ir3de.signing.load_trusted`), or None
    when the config sets none (then statistics are taken signed or not)."""
    if folder is None:
        return None
    from .signing import load_trusted

    return load_trusted(folder)


def _verify_router(router: Any, folder: str | None) -> None:
    """With ``trust``, refuse a saved router unless every expert still carries the
    signature of a trusted key over its statistics (routers keep them), naming the first
    that does not."""
    if folder is None:
        return
    from .signing import load_trusted, verify_all

    trusted = load_trusted(folder)  # (its errors are the folder's: no hint about routers)
    try:
        verify_all(router.stats.values(), trusted)
    except IR3DEError as exc:
        raise IR3DEError(f"{exc}; trust takes a saved router only if every expert's "
                         "statistics are signed by a trusted key: rebuild it from signed "
                         "statistics (ir3de build --trust; a router saved by an ir3de that did not "
                         "keep signatures holds none)") from None


def _build_router(config: Any) -> Any:
    """The router gateway.yaml describes (``router.path`` loaded, or ``router.stats`` fitted)."""
    from .router import Router
    from .statistics import load_stats_files

    src = config.router
    if src.path is not None:
        router = Router.load(src.path, embedder=src.embedder)
        _verify_router(router, config.trust)
        overrides = src.overrides()
        if overrides:
            _refuse_unread(router.config.with_settings(**overrides), overrides,
                           "router.settings.", "the saved router gives", "router.settings gives")
            router.set_params(**overrides)
        return router
    stats = load_stats_files(src.stats)
    if config.trust is not None:  # every file checked before anything is solved
        from .signing import load_trusted, verify_all

        verify_all(stats, load_trusted(config.trust))
    embedder = stats[0].embedder if src.embedder is None else src.embedder
    return Router(embedder, _stats_config(src)).fit_stats(stats)


def _stats_config(src: Any) -> Any:
    """The RouterConfig of a ``router: {stats}`` section: its preset with its settings
    applied; a setting the result would not read is refused, as ``ir3de build`` does."""
    from .router import PRESETS, RouterConfig

    overrides = src.overrides()
    try:
        config = RouterConfig.preset(src.preset, **overrides)
    except IR3DEError as exc:  # said in the field's name, as the unread settings are below
        where = "router.preset" if src.preset not in PRESETS else \
            f"router.settings (over preset {src.preset!r})"
        raise IR3DEError(f"{where}: {exc}") from None
    _refuse_unread(config, overrides, "router.settings.", f"preset {src.preset!r} gives",
                   "router.settings gives")
    return config


def _refuse_unread(config: Any, given: dict[str, Any], prefix: str, source: str,
                   given_source: str | None = None) -> None:
    """Refuse a setting in ``given`` that ``config`` (with ``given`` applied) does not read:
    it would change nothing without a word. The setting is named ``prefix`` + its name, and
    the value that makes it unread is said to come from ``source`` (``given_source`` when
    ``given`` sets it too): gateway.yaml's router and the admin API's PATCH."""
    unread = _unread(config, given, prefix, source, given_source)
    if unread is not None:
        raise IR3DEError(unread)


def _unread(config: Any, given: dict[str, Any], prefix: str, source: str,
            given_source: str | None = None) -> str | None:
    """What :func:`_refuse_unread` refuses, said, or None."""
    found = config.ignored(given)
    if found is None:
        return None
    key, setting, needed = found
    if needed is None:  # the identity solve has no unit-norm columns (solver.solve_identity)
        return (f"{prefix}{key} applies to the ridge model without identity features only "
                f"(identity: null); the router would use identity {config.identity}")
    where = given_source if given_source is not None and setting in given else source
    return f"{prefix}{key} applies to {setting} {needed} only; {where} {setting} " \
           f"{getattr(config, setting)}"


def _file_digest(path: str | os.PathLike[str]) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None  # (missing: it differs from any digest saved; the rebuild names it)
    return digest.hexdigest()


def _router_source(config: Any) -> dict[str, Any]:
    """gateway.yaml's ``router`` section (absolute paths) and a digest of each file it
    names: what tells whether the config's router changed since the gateway last read it
    (a statistics file refitted in place changes it too)."""
    section = config.router.model_dump(exclude={"settings"})
    # Only the settings named (an explicit null differs from none given); with none, the
    # section is as saved before gateway.yaml could give settings, so such states are kept.
    if config.router.settings is not None:
        section["settings"] = config.router.overrides()
    if section["path"] is not None:
        section["path"] = os.path.abspath(section["path"])
        files = [section["path"]]
    else:
        section["stats"] = files = [os.path.abspath(f) for f in section["stats"]]
    return {"section": section, "digests": {f: _file_digest(f) for f in files}}


def _router_settings(router: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(router.config)


def _snapshot(config: Any, router: dict[str, Any]) -> dict[str, Any]:
    """What gateway.yaml sets that the saved state holds too, as saved beside the state
    (``router``: its source, and the experts and settings of the router it builds)."""
    return {"threshold": config.threshold, "min_coverage": config.min_coverage,
            "experts": {n: e.model_dump() for n, e in config.experts.items()},
            "router": router}


# query parameters whose values are credentials in common deployments (?api-key=, ?key=,
# ?token=, presigned ?sig= / X-Amz-Signature=, ?code= of Azure Functions)
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|sig|auth|cred|session|code", re.I)


def _safe_url(url: Any) -> Any:
    """``url`` without the user and password it may carry, and with the values of query
    parameters that look like credentials replaced by ``***`` (for logs and listings)."""
    from urllib.parse import urlsplit, urlunsplit

    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc:  # user:password@host:port -> host:port, as written (an
        # upstream's redirect target may hold a port that parts.port would raise on)
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    if parts.query:
        # split by hand rather than parse_qsl + urlencode, which would re-encode (and so
        # change) every parameter that is not redacted
        fields = [f"{name}=***" if value and _SECRET_PARAM.search(name) else field
                  for field in parts.query.split("&")
                  for name, _, value in [field.partition("=")]]
        parts = parts._replace(query="&".join(fields))
    return urlunsplit(parts)


def _upstream_url(base: str, path: str) -> str:
    """The URL of the API ``path`` (``/chat/completions``) of an expert whose base URL is
    ``base``: the path appended to the base's path, its query (``?api-version=...``) kept."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


_ABSENT = object()


class _Reconciled:
    """The warnings of :func:`_reconcile`: one log line per field on which the saved state
    and gateway.yaml disagree, naming both values and the one used."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.lines: list[dict[str, Any]] = []

    def removed(self, field: str) -> None:
        """An expert gateway.yaml lists that the admin API removed: it stays removed."""
        self(field, "present", _ABSENT, "saved",
             message=f"{field}: kept removed, though gateway.yaml lists it (removed through "
                     "the admin API, whose changes outlast restarts; POST /admin/experts "
                     f"adds it back; removing {self.state_dir} starts from gateway.yaml "
                     "alone)")

    def __call__(self, field: str, config: Any, saved: Any, using: str,
                 why: str | None = None, message: str | None = None) -> None:
        shown = {k: "absent" if v is _ABSENT else _safe_url(v) if field.endswith(".url")
                 else v for k, v in (("config", config), ("saved", saved))}
        if why is None and using == "config":
            why = "edited in gateway.yaml since the gateway last started"
        elif why is None:
            if field.startswith("router.experts."):
                how = "POST /admin/experts adds it back"
            elif field.startswith("experts."):
                how = "the admin API changes it (DELETE, then POST /admin/experts), and so " \
                      "does editing it in gateway.yaml"
            elif field.startswith("router."):
                how = "PATCH /admin/settings changes it"
            else:
                how = "PATCH /admin/settings changes it, and so does editing it in " \
                      "gateway.yaml"
            why = f"saved by the admin API, whose changes outlast restarts; {how}; " \
                  f"removing {self.state_dir} starts from gateway.yaml alone"
        value = shown["config"] if using == "config" else shown["saved"]
        other = shown["saved"] if using == "config" else shown["config"]
        source = "gateway.yaml's" if using == "config" else "the saved state's"
        other_source = "the saved state's" if using == "config" else "gateway.yaml's"
        self.lines.append({
            "event": "config_vs_state", "field": field, "config": shown["config"],
            "saved": shown["saved"], "using": using,
            "message": message or f"{field}: using {source} {json.dumps(value)}, not "
                                  f"{other_source} {json.dumps(other)} ({why})"})


def _reconcile(config: Any, state_dir: Path, saved: _State,
               base: dict[str, Any] | None) -> tuple[_State, dict[str, Any], bool, list]:
    """The state to serve from the saved state and gateway.yaml, and what to save as the
    config's values next to it.

    The rule, a three-way merge (as ``kubectl apply`` does with its last-applied
    configuration): ``base`` holds what gateway.yaml set when the gateway last started or
    saved. A value that gateway.yaml now sets differently from ``base`` was edited in the
    file since, and wins: an operator who edits the file and restarts gets what the file
    says. Any other value the saved state has kept since is an admin API change, and
    stays: the admin API's changes survive restarts. Neither side is silently dropped:
    each disagreement is logged, naming both values and the one used. What this merges:
    ``threshold``, ``min_coverage``, each expert endpoint's fields, endpoints added to or
    removed from the file, and the router: a router section, or a file it names, changed
    since is rebuilt from the file, and the experts the admin API added or removed and the
    settings it changed are applied to it again.

    ``base`` None: a state folder from before this was saved; it is taken as made from
    today's gateway.yaml (the saved values win, with a warning each), and ``base`` is
    saved from now on. Returns (state, base to save, whether the state folder needs
    writing, the log lines).
    """
    from .router import Router, RouterConfig

    note = _Reconciled(state_dir)
    source = _router_source(config)
    old_base = base
    if base is None:
        try:
            built = _build_router(config)
            router_base = {"experts": built.experts, "settings": _router_settings(built)}
        except (IR3DEError, OSError):  # it served from its state so far: it still can
            router_base = {"experts": saved.router.experts,
                           "settings": _router_settings(saved.router)}
        base = _snapshot(config, {**source, **router_base})
    # -- the router
    base_router = base["router"]
    saved_settings = _router_settings(saved.router)
    if base_router["section"] == source["section"] and \
            base_router["digests"] == source["digests"]:
        router, rebuilt, router_base = saved.router, False, base_router
        for expert in base_router["experts"]:
            if expert not in saved.router.experts:
                note.removed(f"router.experts.{expert}")
        for key, value in base_router["settings"].items():
            # (a setting the router in use does not read changes nothing: no warning)
            if saved_settings.get(key, _ABSENT) != value and \
                    saved.router.config.ignored([key]) is None:
                note(f"router.{key}", value, saved_settings.get(key, _ABSENT), "saved")
    else:
        try:
            built = _build_router(config)
        except IR3DEError as exc:
            raise IR3DEError(f"{exc} (gateway.yaml's router changed since the gateway last "
                             f"started, so it is rebuilt over the state in {state_dir})") \
                from None
        built_settings = _router_settings(built)
        router_base = {**source, "experts": built.experts, "settings": built_settings}
        note.lines.append({
            "event": "config_vs_state", "field": "router", "using": "config",
            "message": "router: gateway.yaml's router section or a file it names changed "
                       "since the gateway last started: the router is rebuilt from it, and "
                       "the admin API's changes to the saved router are applied to it again"})
        known, saved_stats = set(base_router["experts"]), saved.router.stats
        stats = {}
        for expert, expert_stats in built.stats.items():
            if expert in known and expert not in saved_stats:  # removed by the admin API
                note.removed(f"router.experts.{expert}")
                continue
            if expert not in known and expert in saved_stats:  # the admin API added it
                note(f"router.experts.{expert}", "present", "present", "config",
                     message=f"router.experts.{expert}: gateway.yaml's router now has an "
                             f"expert {expert!r} too, whose statistics replace those the "
                             "admin API added")
            elif expert in known and expert in saved_stats and \
                    find_identical([saved_stats[expert], expert_stats]) is None:
                # Other statistics than the file's: the admin API replaced the expert
                # (DELETE, then POST under its name), unless the file changed since. An
                # unrelated edit of the router section used to put the file's statistics
                # back under the admin API's endpoint, without a word.
                if not _file_changed(expert_stats.source, base_router["digests"],
                                     source["digests"]):
                    note(f"router.experts.{expert}", "replaced", "replaced", "saved",
                         message=f"router.experts.{expert}: using the statistics the admin "
                                 f"API replaced {expert!r}'s with, not gateway.yaml's, whose "
                                 "file is unchanged since the gateway last started")
                    stats[expert] = saved_stats[expert]
                    continue
                note(f"router.experts.{expert}", "changed", "saved", "config",
                     message=f"router.experts.{expert}: gateway.yaml's statistics file "
                             "changed since the gateway last started, and replaces the saved "
                             "statistics")
            stats[expert] = expert_stats
        for expert in saved.router.experts:
            if expert not in known and expert not in stats:  # added by the admin API
                stats[expert] = saved_stats[expert]
        # A setting gateway.yaml changed since the base was saved comes from the file. One
        # the base lacks (saved by an ir3de without it) counts as the saved router's own
        # value: taking either gives the same router when they agree.
        from_config = {key for key, value in built_settings.items()
                       if value != base_router["settings"].get(key, saved_settings[key])}
        if from_config & _SPELLING_FORMS:
            # The spelling back-off enters once, as a term or as a prior: merged key by key,
            # the file's term could meet the admin API's prior, a router that is refused.
            from_config |= _SPELLING_FORMS
        settings, differ = {}, []
        for key, value in built_settings.items():
            kept = saved_settings[key]
            settings[key] = value if key in from_config else kept
            if kept != value:
                differ.append((key, value, kept, "config" if key in from_config else "saved"))
        try:
            used: Any = RouterConfig(**settings)
        except IR3DEError:  # refused below, where the router is built: warn of them all
            used = None
        # A setting edited into gateway.yaml that the admin API's saved settings leave
        # unread (pairs under a saved selector topk) changes nothing: said, not silent (the
        # same file is refused without the state, as is the same PATCH). The gateway still
        # starts: the file's other edits are applied, and the saved settings kept.
        set_in_file = config.router.overrides()
        named = {k: v for k, v in set_in_file.items() if k in from_config}
        # (the spelling forms enter as one, as in from_config: the file's spelling brings
        # its prior)
        named_in_file = set(set_in_file)
        if named_in_file & _SPELLING_FORMS:
            named_in_file |= _SPELLING_FORMS
        found = None if used is None else used.ignored(named)
        if found is not None:
            key, setting, needed = found
            unread = _unread(used, named, "router.settings.",
                             f"the admin API's change saved in {state_dir} gives")
            until = "" if needed is None else f" sets {setting} {needed}"
            note.lines.append({
                "event": "config_vs_state", "field": f"router.{key}", "using": "saved",
                "message": f"{unread}: gateway.yaml's value changes nothing until PATCH "
                           f"/admin/settings{until} (removing {state_dir} starts from "
                           "gateway.yaml alone)"})
        for key, value, kept, using in differ:
            # (a setting the router in use does not read changes nothing: no warning)
            if used is None or used.ignored([key]) is None:
                # A value gateway.yaml does not name changed with what it names: a cap
                # saved before routers read their statistics' own (1,024 where the files
                # counted 64) was said to be "edited in gateway.yaml".
                why = None if using != "config" or key in named_in_file else \
                    "gateway.yaml does not set it, and the router it describes gives it " \
                    "now: its preset, its statistics files or ir3de's defaults changed, or " \
                    "the setting was taken out of the file, since the gateway last started"
                note(f"router.{key}", value, kept, using, why=why)
        if not stats:
            raise IR3DEError(f"the saved state in {state_dir} removed every expert of "
                             "gateway.yaml's router; move it away to start from the config")
        if list(stats) == built.experts and settings == built_settings and \
                all(stats[e] is built.stats[e] for e in stats):
            router = built
        else:
            try:
                router = Router(built.embedder, RouterConfig(**settings)).fit_stats(stats)
            except IR3DEError as exc:
                raise IR3DEError(f"cannot apply the admin API's changes saved in {state_dir} "
                                 f"to gateway.yaml's changed router ({exc}); move "
                                 f"{state_dir} away to start from the config") from None
        rebuilt = True
    # -- the expert endpoints
    expert_cls = _models()[0]
    wanted = {n: e.model_dump() for n, e in config.experts.items()}
    had = {n: e.model_dump() for n, e in saved.experts.items()}
    experts = {}
    for name in dict.fromkeys([*had, *wanted, *base["experts"]]):
        c, b, s = wanted.get(name), base["experts"].get(name), had.get(name)
        field = f"experts.{name}"
        if c is None and b is None:  # never in gateway.yaml: the admin API's
            if s is not None:
                experts[name] = saved.experts[name]
            continue
        if c is None:  # removed from gateway.yaml since
            if s is not None and name in router.experts:
                # The router merge kept the expert (the admin API added it): its endpoint
                # goes with it, the saved one (gateway.yaml had only overridden it)
                note(field, _ABSENT, "present", "saved",
                     message=f"{field}: the saved endpoint is kept, though gateway.yaml no "
                             "longer lists it: the router routes to the expert, which the "
                             "admin API added")
                experts[name] = saved.experts[name]
            elif s is not None:
                note(field, _ABSENT, "present", "config",
                     message=f"{field}: dropped, as gateway.yaml no longer lists it (edited "
                             "since the gateway last started)")
            continue
        if s is None:
            if b is not None and name != config.fallback and name in router.experts:
                # removed by the admin API, but gateway.yaml's router has the expert again
                # (edited in since): the router merge took the file's, the endpoint follows
                note(field, "present", _ABSENT, "config",
                     message=f"{field}: restored from gateway.yaml, though removed through "
                             "the admin API: gateway.yaml's router has the expert again")
                experts[name] = config.experts[name]
                continue
            if b is not None and name != config.fallback:  # removed by the admin API
                note.removed(field)
                continue
            if b is not None:
                note(field, "present", _ABSENT, "config",
                     message=f"{field}: restored from gateway.yaml, though removed through "
                             "the admin API: it is the fallback expert, which needs an "
                             "endpoint")
            experts[name] = config.experts[name]
            continue
        value = {}
        for key, wanted_value in c.items():
            edited = b is None or wanted_value != b.get(key, _ABSENT)
            value[key] = wanted_value if edited else s.get(key)
            if s.get(key) != wanted_value:
                note(f"{field}.{key}", wanted_value, s.get(key),
                     "config" if edited else "saved")
        try:
            experts[name] = expert_cls.model_validate(value)
        except _pydantic().ValidationError as exc:
            # each side valid, the merge not (the saved url's credentials with an
            # api_key_env edited into gateway.yaml since): named, not a traceback
            raise IR3DEError(f"experts.{name}: {_problems(exc)}, in gateway.yaml's values "
                             f"merged with those the admin API saved in {state_dir}; edit "
                             f"gateway.yaml, or move {state_dir} away to start from it "
                             "alone") from None
    # -- the fallback cuts
    cuts = {}
    for cut in ("threshold", "min_coverage"):
        c, b, s = getattr(config, cut), base[cut], getattr(saved, cut)
        cuts[cut] = c if c != b else s
        if cuts[cut] > 0 and config.fallback is None:  # (c is 0: the config needs one)
            note(cut, c, s, "config", f"{cut} sends prompts to the fallback expert, which "
                                      "gateway.yaml no longer names")
            cuts[cut] = c
        elif cut == "min_coverage" and cuts[cut] > 0 and c == b and \
                not router.reports_coverage:
            # The saved value was set for the router of its time: a router gateway.yaml
            # has changed since (a preset without pairs) wins, as every edit of the file
            # does, and takes the file's value with it.
            note(cut, c, s, "config", "the saved value needs a router whose decisions report "
                                      "coverage, and the router in use (rebuilt from "
                                      "gateway.yaml's changed router section) reports none")
            cuts[cut] = c
        elif s != c:
            note(cut, c, s, "config" if c != b else "saved")
    try:
        state = _State(router, experts, cuts["threshold"], cuts["min_coverage"])
    except IR3DEError as exc:  # gateway.yaml's min_coverage on the router in use
        raise IR3DEError(f"gateway.yaml's min_coverage {cuts['min_coverage']:g}: {exc}; the "
                         f"router in use (gateway.yaml's, with the admin API's changes saved "
                         f"in {state_dir}: selector {router.config.selector!r}) reports none: "
                         "set min_coverage to 0 in gateway.yaml, or move "
                         f"{state_dir} away to start from the config alone") from None
    new_base = _snapshot(config, router_base)
    changed = rebuilt or new_base != old_base or cuts != {
        "threshold": saved.threshold, "min_coverage": saved.min_coverage} or \
        {n: e.model_dump() for n, e in experts.items()} != had
    return state, new_base, changed, note.lines


# Why a key that _bearer_safe refuses cannot be used, said by both key checks.
_NOT_BEARER_SAFE = ("holds a space or a character outside printable ASCII, which an "
                    "'Authorization: Bearer' header cannot carry")


def _bearer_safe(key: str) -> bool:
    """Whether ``key`` can travel as ``Authorization: Bearer <key>``: printable ASCII,
    no space."""
    return all("!" <= c <= "~" for c in key)


def _key_env_problem(env: str) -> str | None:
    """What is wrong with the environment variable an expert's ``api_key_env`` names, or
    None: an expert configured with a key must not be sent requests without one."""
    value = os.environ.get(env)
    if value is None or not value.strip():
        return f"the environment variable {env} is {'not set' if value is None else 'empty'}"
    if not _bearer_safe(value.strip()):
        return f"the environment variable {env} {_NOT_BEARER_SAFE}"
    return None


def _key_envs_rule(config: Any) -> str:
    """Which variables the admin API may name as an expert's ``api_key_env`` (see
    GatewayConfig.admin_key_envs), said by its refusals."""
    allowed = ", ".join(sorted(config.key_envs())) or "none"
    return "the admin API may only name a variable that gateway.yaml names as an " \
           f"expert's api_key_env or lists under admin_key_envs ({allowed})"


def _check_key_envs(experts: dict[str, Any], config: Any, state_dir: Path | None) -> None:
    for name, endpoint in experts.items():
        if endpoint.api_key_env is None:
            continue
        if endpoint.api_key_env not in config.key_envs():
            # (gateway.yaml's own are allowed: this one was saved by the admin API)
            raise IR3DEError(f"experts.{name}.api_key_env: {endpoint.api_key_env}, saved by "
                             f"the admin API in {state_dir}, is not allowed: "
                             f"{_key_envs_rule(config)}; add it to admin_key_envs to keep "
                             f"it, or move {state_dir} away to start from the config")
        problem = _key_env_problem(endpoint.api_key_env)
        if problem is None:
            continue
        mine = config.experts.get(name)
        where = "; set it to the key the expert expects, or remove api_key_env from the " \
                "config" if mine is not None and mine.api_key_env == endpoint.api_key_env \
            else f" (as the admin API saved it in {state_dir}); set it to the key the " \
                 "expert expects"
        raise IR3DEError(f"experts.{name}.api_key_env: {problem}{where}")


def _initial_state(config: Any) -> tuple[_State, dict[str, Any]]:
    """The state to serve, and gateway.yaml's values to save beside it (see _reconcile)."""
    from .router import Router

    state_dir = Path(config.state_dir) if config.state_dir else None
    if state_dir is not None and state_dir.exists() and not state_dir.is_dir():
        # found now rather than at the first admin change, which could not be saved
        raise IR3DEError(f"state_dir {state_dir} exists and is not a folder")
    if state_dir is not None and state_dir.is_dir():
        _make_private(state_dir)
    restored = state_dir is not None and _recover_router(state_dir)
    if restored:
        assert state_dir is not None  # restored implies it
        # A restart comes back with what the admin API last persisted, merged with the
        # config (see _reconcile).
        router = Router.load(state_dir / _ROUTER_FILE)
        _verify_router(router, config.trust)
        saved_file = state_dir / _EXPERTS_FILE
        expert_cls = _models()[0]
        try:
            saved = json.loads(saved_file.read_text(encoding="utf-8"))
            experts = {n: expert_cls.model_validate(e) for n, e in saved["experts"].items()}
            # min_coverage: absent from state folders written before it existed
            state = _State(router, experts, float(saved["threshold"]),
                           float(saved.get("min_coverage", 0.0)))
            base = saved.get(_BASE_KEY)  # absent from state folders written before it
            if base is not None and not (
                    {"threshold", "min_coverage", "experts", "router"} <= set(base)
                    and {"section", "digests", "experts", "settings"} <= set(base["router"])):
                raise KeyError(f"{_BASE_KEY} (gateway.yaml's values when it was saved)")
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # (pydantic's ValidationError is a ValueError)
            reason = _problems(exc) if isinstance(exc, _pydantic().ValidationError) else exc
            raise IR3DEError(f"{saved_file}: not the gateway state this ir3de writes "
                             f"({type(exc).__name__}: {reason}); move {state_dir} away to "
                             "start from the config") from None
        state, base, changed, lines = _reconcile(config, state_dir, state, base)
        for line in lines:
            log.warning(json.dumps(line))
    else:
        _check_key_envs(config.experts, config, state_dir)  # before the (slower) router
        router = _build_router(config)
        state = _State(router, dict(config.experts), config.threshold, config.min_coverage)
        base = _snapshot(config, {**_router_source(config), "experts": router.experts,
                                  "settings": _router_settings(router)})
        changed = False
    for name in state.experts:
        try:
            _check_expert_name(name, config.name, legacy=name not in config.experts)
        except IR3DEError as exc:
            if name in config.experts:
                raise
            # added through the admin API before this ir3de refused such names
            raise IR3DEError(f"{exc} (an expert the admin API saved in {state_dir}); move "
                             f"{state_dir} away to start from the config") from None
    missing = [e for e in state.router.experts if e not in state.experts]
    if missing:
        where = f"'experts' in the config or {saved_file} (the saved state)" \
            if restored else "'experts' in the config"
        raise IR3DEError(f"router experts {missing} have no endpoint under {where}")
    _check_key_envs(state.experts, config, state_dir)
    if changed:  # what the next start compares gateway.yaml with
        try:
            _persist(state, config.state_dir, base, router=state.router is not router)
        except (OSError, ValueError) as exc:
            raise IR3DEError(f"cannot save the gateway state to {state_dir} ({exc})") from None
    return state, base


def _file_changed(source: str, before: dict[str, str], now: dict[str, str]) -> bool:
    """Whether the file statistics were loaded from (``source``: a statistics file's path,
    or ``ROUTER:NAME`` for a router file's expert) has another digest ``now`` than
    ``before``; an unknown file counts as changed."""
    for path, digest in now.items():
        if source == path or source.startswith(f"{path}:"):
            return before.get(path) != digest
    return True


def _recover_router(state_dir: Path) -> bool:
    """Whether ``state_dir`` holds a saved state to restart on, after undoing a change
    that a crash (kill -9, power loss) cut between its two writes (see _persist): the new
    router file without the endpoints that name it. experts.json records the digest of
    the router file it goes with; the previous router file is kept until experts.json is
    written, so it comes back. A first save cut that way left a router file and no
    experts.json: the gateway starts from the config, as if nothing was saved."""
    target, saved = state_dir / _ROUTER_FILE, state_dir / _EXPERTS_FILE
    previous = state_dir / f"{_ROUTER_FILE}.previous"
    if not target.is_file():
        if not saved.exists():  # nothing saved yet
            return False
        # endpoints and settings without their router (deleted, or a folder in its place):
        # starting from the config would drop every admin change at the next save, unsaid
        what = "a directory" if target.is_dir() else \
            "not a regular file" if target.exists() else "missing"
        raise IR3DEError(f"{saved} is saved with the router file {target}, which is {what}; "
                         f"put it back, or move {state_dir} away to start from the config")
    if not saved.exists():  # (the next change replaces it, and any .previous)
        log.warning(json.dumps({"event": "state_recovered", "detail":
                                f"{target} has no {_EXPERTS_FILE} beside it (a first change "
                                "cut short): starting from the config"}))
        return False
    try:
        want = json.loads(saved.read_text(encoding="utf-8")).get(_ROUTER_DIGEST)
    except (OSError, ValueError, AttributeError):
        return True  # _initial_state names what is wrong with the file
    if want is None or _file_digest(target) == want:  # (None: saved before digests were kept)
        return True
    if not isinstance(want, str):
        raise IR3DEError(f"{saved}: {_ROUTER_DIGEST} is {json.dumps(want)}, not a SHA-256; "
                         f"move {state_dir} away to start from the config")
    if previous.is_file() and _file_digest(previous) == want:
        os.replace(previous, target)
        log.warning(json.dumps({"event": "state_recovered", "detail":
                                f"the last change to {state_dir} was cut short: its previous "
                                "router file is back"}))
        return True
    raise IR3DEError(f"{target} is not the router {saved} was saved with (sha256 "
                     f"{want[:12]}); move {state_dir} away to start from the config")


def _make_private(state_dir: Path) -> None:
    """Take group and other permissions off ``state_dir`` and its endpoints file, which
    saves write private (see _persist): a folder an earlier ir3de wrote, or made by hand,
    kept its URL credentials world-readable until the next admin change."""
    for path, mode in ((state_dir, 0o700), (state_dir / _EXPERTS_FILE, 0o600)):
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(mode)
        except OSError as exc:  # (missing: nothing saved yet)
            if not isinstance(exc, FileNotFoundError):
                raise IR3DEError(f"state_dir: cannot make {path} private to the gateway's "
                                 f"user ({exc.strerror or exc})") from None


def _persist(state: _State, state_dir: str | None, base: dict[str, Any],
             router: bool = True) -> None:
    """Save the state (the router only when ``router``) with gateway.yaml's values
    ``base`` beside it (see _reconcile)."""
    if state_dir is None:
        return
    from .store import atomic_write_text

    folder = Path(state_dir)
    # Private to the gateway's user: the endpoints hold URLs that may carry credentials
    # (http://user:password@..., ?api-key=...), which the gateway's log redacts.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def save_endpoints() -> None:
        atomic_write_text(folder / _EXPERTS_FILE, endpoints(), mode=0o600)

    def endpoints() -> str:
        # allow_nan=False: a non-finite number would be written as NaN or Infinity, which
        # is not JSON (ValueError instead: the change is not applied). The router file's
        # digest makes this file the commit point of a change (see _recover_router).
        return json.dumps({"experts": {n: e.model_dump() for n, e in state.experts.items()},
                           "threshold": state.threshold, "min_coverage": state.min_coverage,
                           _ROUTER_DIGEST: _file_digest(folder / _ROUTER_FILE), _BASE_KEY: base},
                          indent=1, allow_nan=False)

    if not router:
        save_endpoints()
        return
    # Router first, endpoints second: both are atomic renames, and the endpoints file is
    # what names the experts a restarted gateway will serve. They go as a pair: should the
    # endpoints fail to save, the previous router file (kept under a second name, a hard
    # link where the file system has them) comes back, or, on a first save, the new one
    # goes, so that the folder a restart reads is never half of a change.
    target, previous = folder / _ROUTER_FILE, folder / f"{_ROUTER_FILE}.previous"
    with contextlib.suppress(FileNotFoundError):
        previous.unlink()
    had = target.is_file()
    if had:
        try:
            os.link(target, previous)
        except OSError:
            import shutil

            shutil.copy2(target, previous)
    try:
        state.router.save(target)
        save_endpoints()
    except BaseException:
        with contextlib.suppress(OSError):
            if had:
                os.replace(previous, target)
            else:
                target.unlink()
        raise
    with contextlib.suppress(OSError):
        previous.unlink()


# --------------------------------------------------------------------------- helpers
# What a header's value may be padded with (and what bytes.strip() strips): ASCII only.
_ASCII_SPACE = " \t\n\r\x0b\x0c"

def _bearer_token(value: bytes) -> tuple[bytes, str | None]:
    """The token of an ``Authorization`` header's ``value``, ``Bearer <token>`` split and
    stripped on ASCII white space ("Bearer<TAB>token" is one too), and why there is none:
    ``"missing"`` (no header, or the scheme alone) or ``"malformed"`` (another scheme);
    the client keys and the admin token are read alike."""
    parts = value.split(None, 1)
    if not parts or (parts[0].lower() == b"bearer" and len(parts) == 1):
        return b"", "missing"
    if parts[0].lower() != b"bearer":
        return b"", "malformed"
    return parts[1].strip(), None


# The longest expert name the gateway takes (characters).
_MAX_EXPERT_NAME = 256


def _check_expert_name(name: str, gateway: str, *, legacy: bool = False) -> None:
    """An expert name must be a usable ``model``: not the gateway's own (which routes).
    ``legacy``: a name the admin API saved before stricter rules (domain_name_problem)."""
    problem = domain_name_problem(name, legacy=legacy)
    if problem:
        raise IR3DEError(f"invalid expert name {name!r}: it {problem}")
    if name == gateway:
        raise IR3DEError(f"expert name {name!r} is the gateway's own name, which routes; "
                         "choose another")
    if legacy:  # (such a name saved in the gateway's state still loads, to be removed)
        return
    if any(part in (".", "..") for part in name.split("/")):
        # clients (curl, httpx, browsers) resolve such a path segment away: /admin/experts/..
        # and /v1/models/../x would never reach the expert
        raise IR3DEError(f"invalid expert name {name!r}: clients resolve its '.' or '..' "
                         "segment away in a URL path, so no request could name the expert; "
                         "choose another")
    if len(name) > _MAX_EXPERT_NAME:
        # it travels in x-ir3de-expert and in URL paths: a name of 150,000 characters made
        # answers no client would read and an expert no DELETE could reach
        raise IR3DEError(f"invalid expert name of {len(name)} characters: at most "
                         f"{_MAX_EXPERT_NAME}")
    if name == "(gateway)":
        raise IR3DEError("expert name '(gateway)' is the label of the gateway's own "
                         "answers in its metrics; choose another")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _LongInteger(ValueError):
    """A JSON integer with more digits than Python converts (valid JSON, so not said to be
    invalid; the interpreter's own message advised a client to call a Python function)."""


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > sys.get_int_max_str_digits():
        raise _LongInteger(f"request body holds an integer of {digits} digits; at most "
                           f"{sys.get_int_max_str_digits()} are read")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: inf, which json.dumps would write as Infinity
        raise ValueError(f"{text} is beyond a float's range: NaN and Infinity cannot be "
                         "forwarded as JSON")
    return value


def _parse_json(raw: bytes) -> Any:
    """The request body as JSON, or ValueError with the reason. Beyond ``json.loads``: NaN
    and Infinity are refused (the forwarded body must be valid JSON), numbers too large for
    a float (1e999) included, as are unpaired surrogates (\\ud800), which no UTF-8 encoder
    accepts, and nesting too deep to parse."""
    body = _loads(raw)
    _encoded(body)
    return body


def _loads(raw: bytes) -> Any:
    """``raw`` parsed as JSON without NaN or Infinity (see _parse_json), or ValueError."""
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float,
                          parse_int=_bounded_int)
    except _LongInteger as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError (bytes that are not UTF-8) are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"request body is not valid JSON ({reason})") from None


def _encoded(value: Any) -> bytes:
    """A value parsed by _loads as compact UTF-8 JSON (as httpx would send it), or
    ValueError where it holds an unpaired surrogate."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        # JSON that escapes half of a UTF-16 pair: valid JSON, but no text (the encoder's
        # message named a position in its own re-encoding, not in the body)
        raise ValueError("request body holds an unpaired surrogate escape (\\ud800-\\udfff), "
                         "which is no text: send the character whole") from None


def _error(status: int, message: str, kind: str = "invalid_request_error",
           code: str | None = None, param: str | None = None,
           headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status_code=status, headers=headers)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed JSON value's type (``null``, not Python's ``NoneType``),
    for the errors that tell a client what it sent."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _content_text(content: Any, where: str) -> str:
    """A message's text; ValueError naming ``where`` (``messages[i].content``) for content
    that OpenAI's API would not take either (rather than routing it as empty)."""
    if content is None:  # an assistant message with tool calls, say
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"'{where}' must be a string or a list of content parts, got "
                         f"{_json_type(content)}")
    texts = []  # OpenAI content parts: keep the text ones
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise ValueError(f"'{where}[{j}]' must be a content part object, got "
                             f"{_json_type(part)}")
        if part.get("type") == "text":
            if not isinstance(part.get("text"), str):
                raise ValueError(f"'{where}[{j}].text' must be a string")
            texts.append(part["text"])
    return "\n".join(texts)


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
# ... but not those naming the operator's own upstream OpenAI account: its organisation
# and project
_NOT_RELAYED = frozenset({"openai-organization", "openai-project"})


def _relayed_headers(upstream: Any) -> dict[str, str]:
    """The headers of an upstream answer that go on to the client (see _RELAYED_HEADERS),
    less those whose value a header cannot carry (see _latin1)."""
    return {k: v for k, v in upstream.headers.items()
            if (k in _RELAYED_HEADERS or k.startswith(_RELAYED_PREFIXES))
            and k not in _NOT_RELAYED and _latin1(v)}


def _latin1(value: str) -> bool:
    """Whether a header value can be sent as is: Starlette encodes them as Latin-1."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


# what stays as is in a percent-encoded header value: printable ASCII but "%"
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7f) if chr(c) not in "%")


def _header_name(name: str) -> str:
    """An expert name as the ``x-ir3de-expert`` and ``x-ir3de-routed-to`` headers carry
    it: as is when it is printable ASCII without ``%``, else percent-encoded UTF-8 (``数学``
    -> ``%E6%95%B0%E5%AD%A6``, ``cs%2Fv2`` -> ``cs%252Fv2``), as header values are bytes
    that clients decode in different ways, or not at all. Either way
    ``urllib.parse.unquote`` gives the name back: it changes nothing but ``%`` escapes."""
    if "%" not in name and name.isascii() and name.isprintable():
        return name
    from urllib.parse import quote

    return quote(name, safe=_HEADER_SAFE)


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
        if not _bearer_safe(key):
            raise IR3DEError(f"api_keys_env: key {i} of {len(keys)} in {env} "
                             f"{_NOT_BEARER_SAFE}")
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


def _is_admin(path: str) -> bool:
    """Whether a route path is the admin API's."""
    return path == "/admin" or path.startswith("/admin/")


# How long a stop waits, after shutdown_seconds, for the requests it cut to say so
_CUT_SECONDS = 2.0

# The scope key under which a request's handler adds to its access-log line (see _AccessLog)
_ACCESS = "ir3de.access"
# The access-log line of the request being answered (see _AccessLog): its id goes to the
# upstream request and into every event line logged meanwhile, and a failure found while
# its answer streams is added to it.
_LINE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("ir3de_line",
                                                                              default=None)
# An unknown model name is shown cut to this many characters in errors and log lines: a
# client could otherwise write a line twice its request's size (up to max_body_bytes).
_SHOWN_NAME_CHARS = 256


def _event(level: int, fields: dict[str, Any]) -> None:
    """One JSON event line (an upstream failure, a cooldown, an admin change) with the id
    of the request it happened in, if any: the key to its access line and the client's
    ``x-ir3de-request-id``."""
    line = _LINE.get()
    log.log(level, json.dumps(fields if line is None
                              else {**fields, "request_id": line["request_id"]}))


def _note_error(message: str) -> None:
    """Add ``message`` as the ``error`` of the access line of the request being answered
    (a stream that failed after its 200 went out: the status cannot say it)."""
    line = _LINE.get()
    if line is not None:
        line["error"] = message


def _shown_name(name: str) -> str:
    """A name a client sent, as errors and log lines show it (see _SHOWN_NAME_CHARS)."""
    if len(name) <= _SHOWN_NAME_CHARS:
        return repr(name)
    return f"{name[:_SHOWN_NAME_CHARS]!r}… ({len(name)} characters)"


# A client's own x-request-id is kept when it is this plain (a UUID, a proxy's hex id,
# base64): it goes into log lines and an upstream header, so nothing that could break them.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def _request_id(headers: Any) -> tuple[str, bool]:
    """A request's id: the client's ``x-request-id`` (set by a proxy in front, say) when it
    is plain enough (:data:`_CLIENT_REQUEST_ID`), else a new ``req_`` + 32 hex digits; and
    whether it is the client's."""
    for key, value in headers:
        if key == b"x-request-id":
            text = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.fullmatch(text):
                return text, True
            break
    return f"req_{uuid.uuid4().hex}", False


# The paths whose requests go on to an expert (and whose requests metrics count)
_UPSTREAM_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class _AccessLog:
    """ASGI middleware: one JSON access-log line per HTTP request, whatever answered it
    (a route, the client-key check, an unknown path, a failure): ``request_id``, ``path``
    (less the ``/v1`` prefix), ``method``, ``client`` (its address), ``status``,
    ``duration_ms``, ``bytes`` (of the body sent), ``complete`` (false when the answer was
    not sent to its end: a client gone mid-stream, or before any of it) and what the
    handler added under ``scope[_ACCESS]`` (a completion's routing, a refusal's reason).
    Never a header or a body: nothing secret. Logged as the last of the body goes out, so
    a client that has its whole answer finds the line written; or, for an answer not sent
    to its end, once the app returns (a client gone before any of it: with the status the
    handler gave, 499).

    It also gives every request an id (:func:`_request_id`), sent back as
    ``x-ir3de-request-id``, and as ``x-request-id`` unless the expert's own is relayed,
    and sent to the expert as ``x-request-id`` (:data:`_LINE`): one id finds a
    request in the client's error, this log and the expert's log. (A client's own id goes
    to the expert with a suffix that makes it unique, logged as ``upstream_request_id``.)"""

    def __init__(self, app: Any, shutdown_seconds: float | None = None,
                 timed: Callable[[str, dict[str, Any], float], None] | None = None) -> None:
        self.app = app
        self.shutdown_seconds = shutdown_seconds
        self.timed = timed  # told each request's path, line and seconds, as it is logged

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id, from_client = _request_id(scope["headers"])
        path = _route_path(scope)
        client = scope.get("client")
        fields = scope[_ACCESS] = {
            "request_id": request_id,
            "path": path[len("/v1"):] if path.startswith("/v1/") else path,
            "method": scope["method"], "client": client[0] if client else None}
        if from_client and path in _UPSTREAM_PATHS:
            # vLLM takes x-request-id as its engine's request id and refuses (or, in some
            # versions, breaks on) one that is already running; a client's id may repeat (a
            # trace id per session, a retry after a timeout), so the experts get it made
            # unique. Ids the gateway makes are unique already.
            fields["upstream_request_id"] = f"{request_id}-{uuid.uuid4().hex[:8]}"
        status: int | None = None
        sent = 0
        logged = False

        def write(complete: bool) -> None:
            nonlocal logged
            logged = True
            seconds = time.perf_counter() - start
            log.info(json.dumps({**fields, "status": status or fields.get("status", 500),
                                 "duration_ms": round(1000 * seconds, 1),
                                 "bytes": sent, "complete": complete}))
            if self.timed is not None:
                self.timed(path, fields, seconds)

        async def sending(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                ours = [(b"x-ir3de-request-id", request_id.encode("latin-1"))]
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    ours.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers + ours}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False) and not logged:
                    write(True)
            await send(message)

        token = _LINE.set(fields)
        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            # What is still running when a stop's shutdown_seconds are up is cancelled by
            # uvicorn (nothing else cancels a request from outside): the client is told,
            # rather than left with a closed connection, or a stream that just ends, which
            # OpenAI's SDKs take for a whole answer. The cancellation ends here, answered:
            # raised on, uvicorn logs it as the app's failure, a traceback per request.
            if logged:
                raise
            import anyio

            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                if status is None:  # a 503, logged as any answer
                    await self._stopped_answer(fields.get("expert"))(scope, receive, sending)
                else:  # past the line's "complete": the answer did not come whole
                    await send({"type": "http.response.body", "more_body": False,
                                "body": _stream_error(self._stopping(), "server_error")})
        finally:
            _LINE.reset(token)
            if not logged:  # not sent to its end (an exception: Starlette answers a 500)
                write(False)

    def _stopping(self) -> str:
        return "the gateway is shutting down" + (
            f" and cut this request after shutdown_seconds ({self.shutdown_seconds:g} s)"
            if self.shutdown_seconds is not None else "")

    def _stopped_answer(self, expert: str | None) -> Any:
        """The answer to a request cut by a stop before its answer started: a 503 the
        client may send again (to another instance, say), naming the ``expert`` it was
        waiting for, as the gateway's other 503s do."""
        headers = {"retry-after": "1"}
        if expert is not None:
            headers["x-ir3de-expert"] = _header_name(expert)
        return _error(503, f"{self._stopping()}; send it again", kind="server_error",
                      code="shutting_down", headers=headers)


class _Cors:
    """ASGI middleware: Starlette's CORSMiddleware for ``origins`` (it answers preflights
    itself, before the client-key check a preflight cannot pass: browsers send it without
    credentials), but not for the admin API, which is no web page's business."""

    def __init__(self, app: Any, origins: list[str]) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.app = app
        # no credentials mode: keys travel in the authorization header, never in cookies
        self.cors = CORSMiddleware(app, allow_origins=origins,
                                   allow_methods=["GET", "HEAD", "POST"],  # (what is served)
                                   allow_headers=["*"], expose_headers=_EXPOSED_HEADERS,
                                   max_age=600)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        admin = scope["type"] == "http" and _is_admin(_route_path(scope))
        await (self.app if admin else self.cors)(scope, receive, send)


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
            if path not in _OPEN_PATHS and not _is_admin(path):
                problem = self._problem(scope["headers"])
                if problem is not None:
                    reason, message = problem
                    self.refused(scope, path, reason)
                    response = _error(401, message, code="invalid_api_key",
                                      headers={"www-authenticate": "Bearer"})
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _problem(self, headers: Any) -> tuple[str, str] | None:
        """None for a request with a valid key, else (metrics reason, message). The
        message never repeats what the client sent."""
        presented, reason = _bearer_token(next((v for k, v in headers
                                                if k == b"authorization"), b""))
        if reason == "missing":
            return "missing", "no API key: send one of the gateway's client keys as " \
                              "'Authorization: Bearer <key>'"
        if reason == "malformed":
            return "malformed", "the Authorization header must be 'Bearer <key>', with " \
                                "one of the gateway's client keys"
        digest = hashlib.sha256(presented).digest()
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


# An SSE event end, any of _EVENT_ENDS, found from the left (see _oversized_event).
_EVENT_END = re.compile(rb"\n\n|\r\r|\n\r\n")


def _oversized_event(buffer: bytearray, limit: int) -> int | None:
    """Where the first SSE event of ``buffer`` longer than ``limit`` bytes starts, the one
    still unfinished at its end included, or None when every event is within ``limit``.
    (Whole events too: whether an event arrived in one read or many must not matter.)"""
    if len(buffer) <= limit:  # the usual case: nothing to look for
        return None
    start = 0
    for end in _EVENT_END.finditer(buffer):
        if end.end() - start > limit:
            return start
        start = end.end()
    return start if len(buffer) - start > limit else None


# The SSE event that ends an OpenAI stream, its data line alone (any line ending).
_DONE = re.compile(rb"(?:\A|[\r\n])data: ?\[DONE\][ \t]*(?:\r\n|\r|\n)")
# How long a stream's connection is read on after [DONE], once the client's body has ended
# (see _Relay): well-behaved experts end the body at once, and the connection goes back to
# the pool.
_DRAIN_SECONDS = 1.0


def _done_event_end(buffer: bytearray, end: int) -> int:
    """The end of the ``data: [DONE]`` event among the whole events ``buffer[:end]``, or 0
    when they hold none."""
    done = _DONE.search(buffer, 0, end)
    if done is None:
        return 0
    event_end = _EVENT_END.search(buffer, done.start(), end)
    return event_end.end() if event_end is not None else 0


def _stream_error(message: str, kind: str = "upstream_error") -> bytes:
    """The SSE event that ends a relayed stream the gateway cannot go on with (``kind``:
    the error's type, the expert's failure unless said). The status line is long gone: an
    ``error`` event is the one way left to tell the client, and OpenAI clients raise it as
    an APIError."""
    return b"event: error\ndata: " + json.dumps({"error": {
        "message": message, "type": kind, "param": None,
        "code": None}}).encode() + b"\n\n"


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
    texts = [_content_text(m.get("content"), f"messages[{i}].content")
             for i, m in enumerate(messages)]
    users = [t for t, m in zip(texts, messages, strict=True) if m.get("role") == "user"]
    if policy == "conversation" or not users:
        # No user message (a system prompt alone, which OpenAI answers): what the expert
        # will answer is in the others.
        return "\n".join(texts)
    return users[-1] if policy == "last_user" else "\n".join(users)


# Bodies up to this size are read on the event loop; larger ones in a reader process
# (see _read_large). 64 KiB of JSON parses in well under 10 ms even at its slowest
# (many tiny values), about what the trip to a worker and back costs for such a body.
_INLINE_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Completion:
    """What the gateway uses of a completions request body, which it parses once."""

    has_model: bool
    model: Any  # the JSON value of "model" (None when absent)
    stream: Any  # of "stream"
    text: str  # the text to route on (per the policy; "" for a prompt of token ids)
    text_error: str | None  # why the body has no text to route on: its 400 (None: it has)
    rest: bytes  # the body without its "model", as compact UTF-8 JSON

    def payload(self, model: str) -> bytes:
        """The body forwarded to an expert: the client's, its ``model`` replaced (first)."""
        head = b'{"model":' + _encoded(model)
        return head + (b"}" if self.rest == b"{}" else b"," + self.rest[1:])


def _read_completion(raw: bytes, chat: bool, policy: str) -> _Completion:
    """The completions request whose body is ``raw``, or ValueError with why it is none.

    A module-level function of picklable arguments and result, so a large body is read in
    a reader process (see _read_large)."""
    body = _loads(raw)
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    try:
        text, text_error = _routing_text(body, chat, policy), None
    except ValueError as exc:
        text, text_error = "", str(exc)
    if "model" in body:
        _encoded(body["model"])  # (forwarded replaced, but a 404 would quote it)
    return _Completion("model" in body, body.get("model"), body.get("stream"), text,
                       text_error, _encoded({k: v for k, v in body.items() if k != "model"}))


async def _read_large(raw: bytes, chat: bool, policy: str, limiter: Any) -> _Completion:
    """:func:`_read_completion` in a reader process (anyio.to_process; at most ``limiter``'s
    number at once, so a burst of large bodies waits for them rather than taking every
    core). Parsing JSON holds the GIL for the whole parse, and so does building the parsed
    objects, so a thread would not free the event loop: a 1 MB body of nested arrays held
    it 0.2 s, stalling every other request (benchmarks/bench_large_bodies.py). Readers
    start as needed, end after 5 idle minutes, and read their requests from a pipe: when
    the gateway dies (even by kill -9) they read its end and exit. A reader that died
    mid-read (killed: out of memory, say) is not the body's fault, necessarily: the body
    is read once more, and BrokenWorkerProcess if that fails too."""
    import anyio.to_process

    try:
        return await anyio.to_process.run_sync(_reader, raw, chat, policy, limiter=limiter)
    except anyio.BrokenWorkerProcess:
        return await anyio.to_process.run_sync(_reader, raw, chat, policy, limiter=limiter)


def _reader(raw: bytes, chat: bool, policy: str) -> _Completion:
    """:func:`_read_completion`, in a reader process. Ctrl-C, SIGTERM and SIGHUP reach the
    whole process group: a reader ignores them (its parse would come back to the gateway
    as a KeyboardInterrupt), since the gateway stops its readers itself."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    return _read_completion(raw, chat, policy)


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
        # (a status of fallback_statuses, a proxy's 502, is a failure too)
        return f"it failed {self.failures} {times} in a row (connection errors, timeouts " \
               f"or fallback_statuses answers) and {when}"


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
                _event(logging.INFO, {"event": "cooldown_end", "expert": name,
                                      "reason": "removed"})
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
                _event(logging.INFO, {"event": "cooldown_end", "expert": ticket.expert,
                                      "reason": "answered",
                                      "down_seconds": round(now - record.down_since, 3)})
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
        _event(logging.WARNING, {"event": "cooldown_start", "expert": expert,
                                 "failures": record.failures, "seconds": self.seconds,
                                 "until": _wall_clock(self.seconds)})

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


# The two forms of the spelling back-off (a router sets at most one): merged as one.
_SPELLING_FORMS = frozenset({"spelling", "spelling_prior"})
# The router settings PATCH /admin/settings changes (and GET /admin/experts lists).
_PATCHABLE = ("alpha", "pairs", "skips", "unseen", "spelling", "spelling_prior", "k", "lam",
              "selector")


def _read_settings(config: Any) -> dict[str, Any]:
    """The model of ``config`` (a RouterConfig) and the settings ``PATCH /admin/settings``
    changes, less those the router does not read (as ``ir3de inspect``): k=50 was listed
    for a geo router, whose PATCH of k alone is refused."""
    settings = {name: getattr(config, name) for name in ("model", *_PATCHABLE)}
    return {name: value for name, value in settings.items() if config.ignored([name]) is None}


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
        # Up to the minutes an expert may take (its timeout is 60 s by default): the
        # default buckets stop at 10 s, where a long answer only begins.
        waits = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
        self.upstream = pc.Histogram("ir3de_upstream_seconds", "Upstream time, by expert: "
                                     "to a stream's first bytes, to a whole answer's "
                                     "last byte", ["expert"], buckets=waits, registry=r)
        self.duration = pc.Histogram("ir3de_request_seconds", "Completions requests from "
                                     "their first byte in to their last byte out (streams "
                                     "whole), by the expert that answered or failed last",
                                     ["expert"], buckets=waits, registry=r)
        self.in_flight = pc.Gauge("ir3de_in_flight", "Requests being served", registry=r)
        self.admin_unauthorized = pc.Counter("ir3de_admin_unauthorized", "Admin API "
                                             "requests refused for a missing, malformed or "
                                             "wrong admin token, by reason", ["reason"],
                                             registry=r)
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
        # the metrics labelled by expert, with their label names in order (for remove())
        self._by_expert = ((self.requests, ("expert", "status")),
                           (self.errors, ("expert", "kind")), (self.upstream, ("expert",)),
                           (self.duration, ("expert",)), (self.cooldowns, ("expert",)))

    def keep_only(self, experts: Iterable[str]) -> None:
        """Drop the series of every expert not among ``experts`` (removed ones; never
        ``(gateway)``'s): each expert name ever added kept ~40 series (two histograms)
        forever, so a gateway whose experts come and go under new names grew without
        bound. A request to a removed expert still in flight logs a series again after
        this; it is dropped again when that request ends (``timed`` in create_app)."""
        keep = {*experts, "(gateway)"}
        for metric, names in self._by_expert:
            stale = {tuple(sample.labels[n] for n in names)
                     for family in metric.collect() for sample in family.samples
                     if sample.labels.get("expert", "(gateway)") not in keep}
            for values in stale:
                metric.remove(*values)


# The environment variables httpx reads when the gateway makes its client (trust_env).
_CLIENT_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
               "http_proxy", "https_proxy", "all_proxy")


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
    from starlette.requests import ClientDisconnect

    from .errors import IR3DEError as _Err

    client_keys = _client_keys(config.api_keys_env)  # before the (slower) router loads
    # read once, at start (a bad folder stops the gateway now, not at the first upload)
    trusted = _trusted_keys(config.trust)
    initial, base = _initial_state(config)
    holder = {"state": initial}
    # /v1/models' "created": when the gateway started, or when the admin API added the
    # expert (stable from one call to the next, as OpenAI's)
    started = int(time.time())
    created = dict.fromkeys([config.name, *initial.experts], started)
    metrics = _Metrics()
    cooldowns = _Cooldowns(config.cooldown_failures, config.cooldown_seconds,
                           started=metrics.cooldowns)
    cooldowns.sync(holder["state"].experts)
    metrics.cooling.set_function(lambda: len(cooldowns.refusing()))
    try:
        # trust_env: httpx reads SSL_CERT_FILE and SSL_CERT_DIR (the CAs that TLS experts'
        # certificates are checked against) and the proxy variables, here
        client = httpx.AsyncClient(limits=httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=min(200, config.max_connections),
            keepalive_expiry=config.upstream_keep_alive_seconds))
        # The content-encodings httpx decodes (it asks for them all): it passes any other
        # through undecoded, which would reach the client as a 200 of compressed bytes.
        decodable = {e.strip() for e in client.headers.get("accept-encoding", "").split(",")}
        decodable.add("identity")
    except (OSError, ValueError, ImportError, httpx.InvalidURL) as exc:
        # (ssl.SSLError is an OSError; ImportError: a socks5:// proxy without socksio)
        # A proxy URL may hold a password: only its variable is named.
        where = ", ".join(f"{v}={os.environ[v]}" if v.startswith("SSL_") else v
                          for v in _CLIENT_ENV if os.environ.get(v))
        raise IR3DEError(f"cannot make the HTTP client for the experts from the "
                         f"environment ({where}): {type(exc).__name__}: {exc}") from None
    # An unset or blank token variable turns the admin API off. Surrounding whitespace is
    # dropped, as from the client keys: a secret made from a file ends in a newline, which
    # no Authorization header carries (the admin API was locked, every token refused).
    raw_token = os.environ.get(config.admin_token_env) if config.admin_token_env else None
    admin_token = raw_token.strip(_ASCII_SPACE) if raw_token is not None \
        and raw_token.strip(_ASCII_SPACE) else None
    if admin_token is not None and any(c.isspace() or c < " " or c == "\x7f"
                                       for c in admin_token):
        raise IR3DEError(f"admin_token_env: {config.admin_token_env} holds a space or a "
                         "control character inside the token, which an 'Authorization: "
                         "Bearer' header cannot carry")
    # (os.environ decodes with surrogateescape: this gives back the variable's own bytes)
    admin_digest = hashlib.sha256(admin_token.encode("utf-8", "surrogateescape")).digest() \
        if admin_token is not None else b""
    admin_lock = asyncio.Lock()
    readers = anyio.CapacityLimiter(min(4, os.cpu_count() or 1))  # (see _read_large)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await client.aclose()

    # no docs and no OpenAPI schema: the schema would list the admin routes to anyone
    # no redirect for a trailing slash: a bare 307 that OpenAI's SDKs do not follow for a
    # POST; the 404 below says what is served instead
    app = FastAPI(title="ir3de gateway", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan, redirect_slashes=False)

    def _refused(scope: Any, path: str, reason: str) -> None:
        metrics.unauthorized.labels(reason).inc()
        if path in _UPSTREAM_PATHS:  # as _counted counts them
            metrics.requests.labels("(gateway)", "401").inc()
        scope[_ACCESS]["refused"] = reason

    if client_keys is not None:
        app.add_middleware(_ClientKeys, digests=client_keys, refused=_refused)
    if config.cors_origins:  # (outside the key check: see _Cors)
        app.add_middleware(_Cors, origins=config.cors_origins)

    def timed(path: str, line: dict[str, Any], seconds: float) -> None:
        if path not in _UPSTREAM_PATHS:
            return
        expert = line.get("expert")
        metrics.duration.labels(expert or "(gateway)").observe(seconds)
        if expert is not None and expert not in holder["state"].experts:
            # a request that was in flight when its expert was removed has just logged the
            # expert's series again (this is its last): drop them, as the removal did
            metrics.keep_only(holder["state"].experts)

    # (added last: the outermost, it sees every answer)
    app.add_middleware(_AccessLog, shutdown_seconds=config.shutdown_seconds, timed=timed)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        # unknown routes, wrong methods, unparsable forms: OpenAI's error JSON too
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":  # no such route
            # as OpenAI words it, and what is served here: clients of the Responses or
            # embeddings APIs learn that this gateway does not speak them
            message = (f"Invalid URL ({request.method} {request.url.path}): this gateway "
                       "serves POST /v1/chat/completions, POST /v1/completions and GET "
                       "/v1/models" + (" (without a trailing slash)"
                                       if request.url.path.endswith("/") else ""))
        return _error(exc.status_code, message, headers=getattr(exc, "headers", None))

    async def _send(expert_name: str, endpoint: Any, path: str, body: _Completion,
                    stream: bool, again: bool = False) -> httpx.Response:
        headers = {"content-type": "application/json"}
        line = _LINE.get()
        if line is not None:  # one id in both logs (vLLM takes it as its own)
            if again:
                # The first expert may still be running it (a timeout), on the same
                # engine when experts are adapters of one vLLM server, which refuses an
                # id already running: the second attempt's is its own.
                line["fallback_request_id"] = f"{line['request_id']}-{uuid.uuid4().hex[:8]}"
            headers["x-request-id"] = line.get(
                "fallback_request_id", line.get("upstream_request_id", line["request_id"]))
        if endpoint.api_key_env:  # (set: checked at startup and when the expert was added)
            key = os.environ.get(endpoint.api_key_env, "").strip()
            if endpoint.api_key_header:
                headers[endpoint.api_key_header] = key
            else:
                headers["authorization"] = f"Bearer {key}"
        request = client.build_request("POST", _upstream_url(endpoint.url, path),
                                       content=body.payload(endpoint.model or expert_name),
                                       headers=headers, timeout=endpoint.timeout)
        for attempt in (0, 1):
            start = time.perf_counter()
            # httpx's timeout bounds each wait (for a connection, for each read), not the
            # whole answer: an expert sending a byte now and then would hold a request for
            # ever. A whole answer (an error answering a stream included) must come within
            # the timeout of the request being sent (a connection in hand: a wait for one
            # of the gateway's own is not the expert's), and so must a stream's first
            # bytes; the rest of a stream, relayed as it comes, keeps httpx's bound alone.
            deadline = anyio.CancelScope()
            steps: dict[str, float] = {}  # httpcore's trace events of this attempt: when

            async def trace(event: str, _: Any, deadline: anyio.CancelScope = deadline,
                            steps: dict[str, float] = steps) -> None:
                steps[event] = time.monotonic()
                if event.endswith(".send_request_headers.started"):
                    deadline.deadline = anyio.current_time() + endpoint.timeout

            request.extensions["trace"] = trace
            try:
                with deadline:
                    # streamed either way: a whole answer is read here, bounded (httpx's
                    # own read holds any size), within the same deadline
                    response = await client.send(request, stream=True)
                    unknown = [e for e in response.headers.get_list("content-encoding",
                                                                     split_commas=True)
                               if e.strip().lower() not in decodable]
                    if unknown:
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                        raise UnknownEncoding(unknown[0].strip(), request=request)
                    if not stream or response.status_code >= 400:
                        response = await _read_whole(response)
                    elif response.status_code < 300:
                        response = await _first_bytes(response)
                if deadline.cancelled_caught:
                    what = "answer begun" if stream else "whole answer"
                    raise httpx.ReadTimeout(f"no {what} within {endpoint.timeout:g} s",
                                            request=request)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # (DecodingError: a body that its content-encoding does not describe)
                metrics.errors.labels(expert_name, type(exc).__name__).inc()
                if attempt == 1 or not _retried(exc, steps, time.monotonic()):
                    raise  # (logged by _attempt)
                _log_failure(expert_name, exc, retried=True)
                continue
            metrics.upstream.labels(expert_name).observe(time.perf_counter() - start)
            return response
        raise AssertionError("unreachable")

    async def _read_whole(response: httpx.Response) -> httpx.Response:
        """``response`` read whole (decoded), as ``aread`` would, but refused with
        AnswerTooLarge as soon as it passes ``max_answer_bytes``, rather than after: a gzip
        answer of 4 MB decoded to 4 GB in the gateway's memory. The streamed response is
        closed either way; the answer is a response holding the decoded body."""
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > config.max_answer_bytes:
                    raise AnswerTooLarge(f"more than {config.max_answer_bytes} bytes, "
                                         "decoded", request=response.request)
        finally:
            # shielded: a deadline or a client gone cancels this, and the connection
            # must still go back (or be dropped, half read)
            with anyio.CancelScope(shield=True):
                await response.aclose()
        return httpx.Response(response.status_code, headers=_decoded_headers(response),
                              content=bytes(body), request=response.request)

    def _decoded_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
        """``response``'s headers for a copy that holds its body decoded: without the
        content-encoding that would have it decoded again. (Only the status and some
        headers are relayed.) Raw bytes: a value as httpx decoded it (UTF-8, say) might
        not encode back."""
        return [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]

    class _Begun(httpx.AsyncByteStream):
        """A streamed answer's body, decoded, whose first bytes are already read (see
        _first_bytes); closing it closes the expert's response."""

        def __init__(self, first: bytes, rest: AsyncIterator[bytes],
                     upstream: httpx.Response) -> None:
            self.first, self.rest, self.upstream = first, rest, upstream

        async def __aiter__(self) -> AsyncIterator[bytes]:
            if self.first:
                yield self.first
            async for chunk in self.rest:
                yield chunk

        async def aclose(self) -> None:
            await self.upstream.aclose()

    async def _first_bytes(response: httpx.Response) -> httpx.Response:
        """A 2xx stream once its first bytes have come: servers such as vLLM send a
        stream's headers as they take the request, so an engine that is stuck or
        overloaded answers every stream with headers alone. Read here, within the
        attempt's deadline, its silence is a timeout (the fallback, a cooldown) rather
        than a 200 whose stream ends in an error event. The copy's body is the decoded
        stream (without the content-encoding that would have it decoded again)."""
        rest = response.aiter_bytes()
        try:
            first = await anext(rest, b"")
        except BaseException:  # (a timeout, a broken connection, a cancellation)
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise
        return httpx.Response(response.status_code, headers=_decoded_headers(response),
                              stream=_Begun(first, rest, response), request=response.request)

    async def _attempt(ticket: _Ticket, endpoint: Any, path: str, body: _Completion,
                       stream: bool, again: bool = False) -> httpx.Response:
        """:func:`_send` to the ticket's expert, its outcome recorded for cooldowns;
        ``again``: a second expert's attempt at the request."""
        answered: bool | None = None  # cancelled (the request or the server): no outcome
        try:
            response = await _send(ticket.expert, endpoint, path, body, stream, again)
            answered = response.status_code not in config.fallback_statuses
            if not answered:  # (a proxy's "no upstream", an overloaded server)
                metrics.errors.labels(ticket.expert, f"HTTP {response.status_code}").inc()
                _upstream_error(ticket.expert, f"HTTP {response.status_code}",
                                "a status in fallback_statuses")
            return response
        except httpx.PoolTimeout:
            # all of the gateway's connections busy: its own limit, which says nothing
            # about this expert
            raise
        except httpx.TransportError as exc:  # refused twice, timed out, cut off, garbled
            answered = False
            _log_failure(ticket.expert, exc)
            raise
        except httpx.DecodingError as exc:  # an answer, in a body the gateway cannot decode
            answered = True
            _log_failure(ticket.expert, exc)
            raise
        except Exception as exc:
            # What httpx lets through unmapped (an ExceptionGroup holding an OverflowError
            # when the proxy of the environment's HTTP_PROXY has port 99999, say) fails the
            # attempt as a transport error does: a 502 or the fallback, not a 500.
            answered = False
            metrics.errors.labels(ticket.expert, type(exc).__name__).inc()
            _log_failure(ticket.expert, exc)
            raise _Unexpected(str(exc)) from exc
        finally:
            cooldowns.done(ticket, answered)

    def _log_failure(expert: str, exc: Exception, *, retried: bool = False) -> None:
        """A warning line for an attempt that failed (``retried``: one sent again), with
        the cause behind httpx's error, which the client's message names by type only (a
        TLS failure's reason, a DNS error): what the operator needs to fix it."""
        root = _chain(exc)[-1]
        _upstream_error(expert, _error_kind(exc), f"{type(root).__name__}: {root}",
                        retried=retried)

    def _upstream_error(expert: str, error: str, cause: str, *,
                        retried: bool = False) -> None:
        """The warning line of an upstream failure: ``error`` its kind, ``cause`` what
        the operator needs to know of it."""
        _event(logging.WARNING, {"event": "upstream_error", "expert": expert,
                                 "error": error, "retried": retried, "cause": cause})

    def _error_kind(exc: Exception) -> str:
        """An upstream failure's type as messages name it: httpx's error (ConnectError,
        ReadTimeout...), or for another exception the innermost one behind it
        (OverflowError, not the ExceptionGroup holding it)."""
        if isinstance(exc, httpx.HTTPError) and not isinstance(exc, _Unexpected):
            return type(exc).__name__
        return type(_chain(exc)[-1]).__name__

    def _unavailable(down: _Down, other: _Down | None, which: str) -> Any:
        """The 503 for a request whose expert (and the one it would go on to, ``which``: the
        fallback, or the router's pick when the fallback was chosen over it) is cooling
        down, with ``retry-after`` (whole seconds, at least 1: when one of them is tried
        again)."""
        message = f"expert {down.expert!r} is unavailable: {down.why()}"
        retry_in = down.retry_in
        if other is not None:
            message += f"; so is the {which} {other.expert!r}: {other.why()}"
            retry_in = min(retry_in, other.retry_in)
        metrics.requests.labels(down.expert, "503").inc()
        return _error(503, message, kind="upstream_error", code="expert_unavailable",
                      headers={"retry-after": str(max(1, math.ceil(retry_in))),
                               **_meant_for(down.expert)})

    async def _proxy(request: Request, path: str, chat: bool, info: dict[str, Any]) -> Any:
        """The answer to one completions request; ``info`` gets what its access-log line
        reports (see _counted)."""
        bounded = _bounded(request, admin=False)
        if isinstance(bounded, JSONResponse):
            return bounded
        try:
            raw = await bounded.body()
        except _BodyTooLarge:
            return _too_large(None, admin=False)
        except ClientDisconnect:
            return _client_gone("sending the whole request body")
        return await _while_connected(request, _forward(raw, path, chat, info))

    async def _while_connected(request: Request, answer: Awaitable[Any]) -> Any:
        """``answer``, unless the client disconnects first: then it is cancelled (with the
        upstream request it is waiting for, which would otherwise run to its timeout for
        nobody) and the answer is a 499, logged as for a client gone mid-upload.

        (A stream relayed after this is watched by Starlette, see _Relay.)"""
        result = None
        async with anyio.create_task_group() as watch:
            async def gone() -> None:
                # After the body, the server's next message is the client's disconnect.
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                watch.cancel_scope.cancel()

            watch.start_soon(gone)
            result = await answer
            watch.cancel_scope.cancel()  # (no await since: the answer is kept)
        return _client_gone("the answer was ready") if result is None else result

    async def _forward(raw: bytes, path: str, chat: bool, info: dict[str, Any]) -> Any:
        """The answer to a completions request whose body is ``raw`` (see _proxy)."""
        try:
            if len(raw) <= _INLINE_BODY_BYTES:
                body = _read_completion(raw, chat, config.policy)
            else:
                body = await _read_large(raw, chat, config.policy, readers)
        except ValueError as exc:
            return _error(400, str(exc))
        except anyio.BrokenWorkerProcess:  # two readers died on it (see _read_large)
            return _error(503, "the gateway's process reading the request body died; "
                               "try again", kind="server_error", code="reader_failed")
        state = holder["state"]  # this request finishes on the router it started with
        model = body.model if body.has_model else config.name
        if not isinstance(model, str):
            return _error(400, f"'model' must be a string, got {_json_type(model)}",
                          param="model")
        info["model"] = model if len(model) <= _SHOWN_NAME_CHARS else _shown_name(model)
        stream = body.stream
        if stream is None:  # OpenAI's API reads "stream": null as not streaming
            stream = False
        if not isinstance(stream, bool):
            # bool("false") is True: guessing would stream to a client that asked not to
            return _error(400, "'stream' must be true or false", param="stream")
        info["stream"] = stream
        routed = model == config.name
        if not routed and model not in state.experts:
            return _error(404, f"model {_shown_name(model)} does not exist; use "
                               f"{config.name!r} to "
                               f"route or one of {sorted(state.experts)}",
                          code="model_not_found", param="model")
        param = "messages" if chat else "prompt"
        # Only routing reads the prompt: a request that names an expert is forwarded as
        # is, with whatever that expert accepts (token ids, no user message...).
        if routed and body.text_error is not None:
            return _error(400, body.text_error, param=param)
        text = body.text if routed else ""
        # an image-only message, a prompt of token ids or of white space: nothing to route
        # on, but an expert can answer it
        blank = routed and is_blank(text)
        textless = blank
        decision = None
        if routed and not blank:
            start = time.perf_counter()
            try:
                decision = state.router.route(text)
            except EmptyInputError:
                # text, but only special tokens ("<s>") or words the tokenizer does not
                # know: nothing to route on either
                textless = True
            except _Err as exc:
                return _error(400, f"cannot route this prompt: {exc}")
            else:
                metrics.routing.observe(time.perf_counter() - start)
        # routed_to: the router's pick; reason: why another expert, the fallback, answers
        confidence = coverage = routed_to = reason = None
        if textless and config.fallback:
            expert, reason = config.fallback, "no_text"
        elif routed:
            if decision is None:
                what = "text to route on" if blank else \
                    f"token to route on ({state.router.embedder.why_no_token(text)})"
                return _error(400, f"the prompt has no {what}; name an expert as 'model' or "
                                   "configure a fallback", param=param)
            expert = routed_to = decision.expert
            confidence, coverage = decision.confidence, decision.coverage
            if config.fallback and coverage is not None and coverage < state.min_coverage:
                expert, reason = config.fallback, "low_coverage"  # unlike all the fit data
            elif confidence < state.threshold and config.fallback:
                expert, reason = config.fallback, "low_confidence"
        else:
            expert = model
        info.update(expert=expert, routed_to=routed_to, fallback=reason,
                    confidence=confidence, coverage=coverage)
        chosen = expert
        fallback = config.fallback if config.fallback in state.experts else None
        # What a routed request tries when its expert is down or fails: the fallback; or,
        # where the fallback was chosen over the router's pick (low confidence or
        # coverage), that pick. A request the router placed was a 502 or 503 naming the
        # fallback alone while the pick was up.
        if not routed:
            alternative = None
        elif reason in ("low_confidence", "low_coverage"):
            alternative = routed_to if routed_to in state.experts else None
        else:
            alternative = fallback
        if alternative == expert:
            alternative = None
        which = "router's pick" if alternative == routed_to else "fallback expert"

        def switch(why: str) -> str:
            """Go on to ``alternative``: the fallback answers (``why``), or the pick does,
            the fallback's reason kept in the line as ``fallback_skipped``."""
            nonlocal reason
            assert alternative is not None  # (called only where there is one)
            if alternative == routed_to:
                info["fallback_skipped"], reason = reason, None
            else:
                reason = why
                metrics.fallbacks.labels(reason).inc()
            info.update(expert=alternative, fallback=reason)
            return alternative

        ticket = cooldowns.admit(expert)
        if isinstance(ticket, _Down):
            # An expert that keeps failing is not tried: a routed request goes on to the
            # alternative, one that names the expert gets a 503 saying when to come back.
            other = cooldowns.admit(alternative) if alternative is not None else None
            if not isinstance(other, _Ticket):
                return _unavailable(ticket, other, which)
            expert, ticket = switch("expert_down"), other
        elif reason is not None:
            # sent to the fallback: counted now, not when it was chosen (one that is down
            # leaves the request to the router's pick, and was counted all the same)
            metrics.fallbacks.labels(reason).inc()
        try:
            response = await _attempt(ticket, state.experts[expert], path, body, stream)
        except httpx.TransportError as exc:
            # A request that names its expert may carry what that expert alone accepts:
            # it is never sent to another one. Routed requests go to the alternative,
            # unless the gateway's own connections were all busy: it would wait for the
            # same pool.
            if alternative is None or expert == alternative \
                    or isinstance(exc, httpx.PoolTimeout):
                before = f"expert {chosen!r} is cooling down; " if expert != chosen else ""
                return _upstream_failed(expert, state.experts[expert], exc, before)
            second = cooldowns.admit(alternative)
            if isinstance(second, _Down):
                return _upstream_failed(expert, state.experts[expert], exc,
                                        after=f"; the {which} {alternative!r} is "
                                              f"unavailable: {second.why()}")
            failed, expert = expert, switch("upstream_failure")
            try:
                response = await _attempt(second, state.experts[expert], path, body, stream,
                                          again=True)
            except (httpx.TransportError, httpx.DecodingError) as exc2:
                return _upstream_failed(expert, state.experts[expert], exc2,
                                        f"expert {failed!r} failed ({_error_kind(exc)}); ")
        except httpx.DecodingError as exc:  # it did answer: no fallback
            return _upstream_failed(expert, state.experts[expert], exc)
        else:
            if response.status_code in config.fallback_statuses \
                    and alternative is not None and alternative != expert:
                # The expert is down behind its proxy, or overloaded: a routed request goes
                # on to the alternative, as on a refused connection. Without one (or with
                # it cooling down) the answer is relayed as it came.
                second = cooldowns.admit(alternative)
                if isinstance(second, _Ticket):
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                    failed, status = expert, response.status_code
                    expert = switch("upstream_failure")
                    try:
                        response = await _attempt(second, state.experts[expert], path, body,
                                                  stream, again=True)
                    except (httpx.TransportError, httpx.DecodingError) as exc2:
                        return _upstream_failed(expert, state.experts[expert], exc2,
                                                f"expert {failed!r} answered {status}; ")
        refused = response.status_code in (401, 403)
        if response.status_code > 599 or response.is_redirect or refused:
            # Answers the gateway does not relay: a 502 the expert would give again
            with anyio.CancelScope(shield=True):
                await response.aclose()
            metrics.requests.labels(expert, "502").inc()
            if response.is_redirect:
                # Not followed: the request, prompt and expert's key with it, would go
                # again, perhaps to another host. Nor relayed: a client gets no location
                # (not a relayed header), and its SDK would not follow a POST's redirect.
                message = f"answered {response.status_code}, {_redirect(response)}, which " \
                    "the gateway does not follow: the expert's url needs updating"
            elif refused:
                # The client's credentials are the gateway's business, never forwarded: an
                # expert refusing is refusing the gateway's own (api_key_env), which its
                # answer may partly show ("Incorrect API key provided: sk-cod***1234").
                key_env = state.experts[expert].api_key_env
                fix = f"check the key in ${key_env}" if key_env else \
                    "it needs a key: set the expert's api_key_env"
                _event(logging.WARNING, {"event": "upstream_refused", "expert": expert,
                                         "status": response.status_code})
                message = f"refused the gateway's credentials ({response.status_code}): {fix}"
            else:
                # HTTP has no such status, but h11 reads any three digits from 200 on (1xx
                # are not final answers): uvicorn would fail to send it, and the client get
                # an empty reply
                message = f"answered with status {response.status_code}, which is not an " \
                    "HTTP status (100-599)"
            return _error(502, f"expert {expert!r} {message}", kind="upstream_error",
                          headers=_meant_for(expert, final=True))
        headers = {**_relayed_headers(response), "x-ir3de-expert": _header_name(expert)}
        if routed_to is not None:
            headers["x-ir3de-routed-to"] = _header_name(routed_to)
        if reason is not None:
            headers["x-ir3de-fallback"] = reason
        if confidence is not None:
            headers["x-ir3de-confidence"] = f"{confidence:.4f}"
        if coverage is not None:
            headers["x-ir3de-coverage"] = f"{coverage:.4f}"
        # The upstream's content type, or none when it sent none: a plain-text error
        # labelled JSON would send a client's parser astray.
        if "content-type" in response.headers and _latin1(response.headers["content-type"]):
            headers["content-type"] = response.headers["content-type"]
        try:
            reply = _reply(response, stream, headers, expert)
        except Exception as exc:  # the upstream answered: let go of it
            # Should the answer not make a reply after all (a header no client can be
            # sent), the upstream is let go and the client gets OpenAI's error JSON.
            with anyio.CancelScope(shield=True):
                await response.aclose()
            metrics.requests.labels(expert, "502").inc()
            return _error(502, f"expert {expert!r} answered, but its answer cannot be "
                               f"relayed ({type(exc).__name__}: {exc})",
                          kind="upstream_error", headers=_meant_for(expert))
        metrics.requests.labels(expert, str(response.status_code)).inc()
        return reply

    def _redirect(response: httpx.Response) -> str:
        """Where an upstream's 3xx points, as its 502 says it: absolute, and without the
        credentials a URL may hold (see _safe_url)."""
        location = response.headers.get("location")
        if location is None:
            return "a redirection without a location"
        try:
            return f"a redirect to {_safe_url(str(response.url.join(location)))!r}"
        except (httpx.InvalidURL, ValueError):
            return "a redirect to a location that is not a URL"

    def _reply(response: httpx.Response, stream: bool, headers: dict[str, str],
               expert: str) -> Any:
        """The client's answer from the upstream's (read whole unless a 2xx stream)."""
        if not stream or response.status_code >= 400:  # read whole by _send
            return Response(response.content, status_code=response.status_code,
                            headers=headers)

        async def chunks() -> AsyncIterator[bytes]:
            # (no cleanup here: _Relay closes the upstream response, whether or not this
            # generator ever started)
            # Decoded bytes (aiter_bytes, not aiter_raw): a gzipped upstream stream would
            # reach the client compressed, without its content-encoding. Relayed event by
            # event: should the upstream break off in the middle of one, the half sent
            # would run into the error event below and the client could parse neither.
            # An event is held until it ends: one that passes max_answer_bytes (an expert
            # that never ends an event, or one huge event) cuts the stream, rather than
            # growing the buffer without bound while the client gets nothing.
            limit = config.max_answer_bytes
            pending = bytearray()
            received = response.aiter_bytes()
            try:
                async for chunk in received:
                    start = max(len(pending) - 2, 0)  # an event end may span two chunks
                    pending += chunk
                    cut = _oversized_event(pending, limit)
                    if cut is not None:
                        if cut:  # the whole events before it are the expert's answer
                            yield bytes(pending[:cut])
                        del pending[:]
                        # let go of the expert now, before the client reads the error
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                        metrics.errors.labels(expert, "stream_EventTooLarge").inc()
                        message = (f"expert {expert!r} sent an SSE event of more than {limit} "
                                   "bytes (decoded), over the gateway's max_answer_bytes: "
                                   "the stream is cut")
                        _upstream_error(expert, "EventTooLarge", message)
                        _note_error(message)
                        yield _stream_error(message)
                        return
                    end = _whole_events(pending, start)
                    done = _done_event_end(pending, end)
                    if done:
                        yield bytes(pending[:done])
                        break
                    if end:
                        yield bytes(pending[:end])
                        del pending[:end]
                else:  # the stream ended without [DONE]
                    if pending:  # an upstream that ends without a blank line: keep it all
                        yield bytes(pending)
                    return
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # (after the 200: only the log and the access line's error can say it)
                metrics.errors.labels(expert, f"stream_{type(exc).__name__}").inc()
                _log_failure(expert, exc)
                message = f"expert {expert!r} broke off the stream ({type(exc).__name__})"
                _note_error(message)
                yield _stream_error(message)
                return
            # After [DONE], the client has its whole answer: nothing more is relayed, and an
            # expert that then holds the connection open (or breaks it) no longer keeps the
            # client waiting for its timeout and an error event. The rest is read by
            # _Relay, once the client's body has ended.
            relay.rest = received

        relay = _Relay(chunks(), response, status_code=response.status_code, headers=headers)
        return relay

    class AnswerTooLarge(httpx.DecodingError):
        """An expert's answer, decoded, over ``max_answer_bytes`` (see _read_whole). A
        DecodingError, as an answer the gateway cannot decode is: the expert did answer,
        so the request is not retried nor sent to the fallback, and the failure does not
        count towards a cooldown; it is a 502 naming the expert and the limit."""

    class UnknownEncoding(httpx.DecodingError):
        """An answer in a content-encoding (its message) that httpx does not decode: a
        DecodingError, as a body its content-encoding does not describe is (see
        AnswerTooLarge)."""

    class _Unexpected(httpx.TransportError):
        """An exception other than httpx's own while contacting an expert (its
        ``__cause__``), turned into a transport error: see _attempt."""

    class _Unsent(JSONResponse):
        """The answer to a client already gone: logged and counted, never sent."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            return None

    def _client_gone(before: str) -> Any:
        """The answer to a client that disconnected ``before`` something: nobody to answer,
        so it is logged as nginx does (499) and nothing is sent."""
        return _Unsent({"error": {"message": f"the client disconnected before {before}",
                                  "type": "invalid_request_error", "param": None,
                                  "code": "client_disconnected"}}, status_code=499)

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
            # what the upstream may still send after [DONE], read after the client's body
            # has ended (see _reply)
            self.rest: AsyncIterator[bytes] | None = None

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            metrics.in_flight.inc()  # until the last chunk, not until the headers
            try:
                await super().__call__(scope, receive, send)
                if self.rest is not None:
                    # Read for a moment only so that the connection can go back to the
                    # pool: the client has its whole answer and is not held meanwhile.
                    with anyio.move_on_after(_DRAIN_SECONDS):
                        with contextlib.suppress(httpx.TransportError, httpx.DecodingError):
                            async for _ in self.rest:
                                pass
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
        headers = _meant_for(expert, final=isinstance(exc, (AnswerTooLarge, UnknownEncoding)))
        if isinstance(exc, httpx.PoolTimeout):
            # the gateway's limit, not the expert's failure: a 503 the client may retry
            metrics.requests.labels(expert, "503").inc()
            return _error(503, f"{before}the request to expert {expert!r} was not sent: all "
                               f"{config.max_connections} of the gateway's upstream "
                               f"connections stayed busy for {endpoint.timeout:g} s "
                               "(max_connections)", kind="upstream_error", code="gateway_busy",
                          headers={"retry-after": "1", **headers})
        tls = next((e for e in _chain(exc) if isinstance(e, ssl.SSLError)), None)
        if isinstance(exc, httpx.ConnectTimeout):
            status, what = 504, f"is unreachable: no connection within {endpoint.timeout:g} s"
        elif isinstance(exc, httpx.TimeoutException):
            status, what = 504, f"did not answer within {endpoint.timeout:g} s"
        elif isinstance(exc, AnswerTooLarge):  # (a DecodingError: checked first)
            status, what = 502, f"sent an answer of more than {config.max_answer_bytes} " \
                                "bytes (decoded), over the gateway's max_answer_bytes"
        elif isinstance(exc, UnknownEncoding):
            status, what = 502, f"answered in content-encoding {str(exc)!r}, which the " \
                                "gateway cannot decode"
        elif isinstance(exc, httpx.DecodingError):
            status, what = 502, "sent an answer its content-encoding does not describe"
        elif isinstance(exc, httpx.ConnectError) and tls is not None:
            # OpenSSL's reason (CERTIFICATE_VERIFY_FAILED), not its whole message, which
            # may name the expert's host (the log has it all: _log_failure)
            status, what = 502, "is unreachable: the TLS handshake failed, " \
                                f"{tls.reason or type(tls).__name__}"
        elif isinstance(exc, httpx.ConnectError):
            status, what = 502, "is unreachable"
        elif isinstance(exc, _Unexpected):
            status, what = 502, "was not reached: sending the request failed"
        else:  # connected, then the answer broke off or was not HTTP (or never came)
            status, what = 502, "was reached, but sent a malformed or truncated answer " \
                                "or closed the connection without one"
        metrics.requests.labels(expert, str(status)).inc()
        return _error(status, f"{before}expert {expert!r} {what} ({_error_kind(exc)})"
                              f"{after}", kind="upstream_error", headers=headers)

    def _meant_for(expert: str, *, final: bool = False) -> dict[str, str]:
        """The header of an error the gateway makes for a request it had chosen an expert
        for (x-ir3de-expert, as on the expert's own answers): which one failed, or would
        not take it. ``final``: an answer the expert would give again (a redirect, an
        encoding or size the gateway refuses), which OpenAI's SDKs are told not to retry
        (``x-should-retry: false``): each try could read up to max_answer_bytes."""
        headers = {"x-ir3de-expert": _header_name(expert)}
        if final:
            headers["x-should-retry"] = "false"
        return headers

    async def _counted(request: Request, path: str, chat: bool) -> Any:
        """:func:`_proxy`, counted, with what its access-log line (see _AccessLog) says of
        it: ``model``; ``expert``: the expert that answered, or failed last;
        ``routed_to``: the router's pick (null for a request that names its expert, or has
        no text to route on); ``fallback``: why the fallback expert answered instead
        (``low_confidence``, ``low_coverage``, ``no_text``, ``expert_down``,
        ``upstream_failure``), or null; ``confidence``, ``coverage``, ``stream``,
        ``status``; ``error``: the gateway's own error message, for the answers it makes
        itself."""
        metrics.in_flight.inc()
        info: dict[str, Any] = {"model": None, "expert": None,
                                "routed_to": None, "fallback": None, "confidence": None,
                                "coverage": None, "stream": None}
        try:
            response = await _proxy(request, path, chat, info)
        except asyncio.CancelledError:
            # (a stop cut it, see _AccessLog: its line still says where it was going)
            request.scope[_ACCESS].update(info)
            raise
        finally:
            metrics.in_flight.dec()
        # The gateway's own answers are OpenAI's error JSON (_error, _client_gone); an
        # upstream's is relayed as a Response or a _Relay (x-ir3de-expert is on both kinds).
        own = isinstance(response, JSONResponse)
        if own and response.status_code < 500:  # (5xx: counted under the expert)
            # a client gone while its expert answered: that expert's request, as logged
            gone = response.status_code == 499 and info["expert"] is not None
            metrics.requests.labels(info["expert"] if gone else "(gateway)",
                                    str(response.status_code)).inc()
        line = {**info, "status": response.status_code}
        if own:
            line["error"] = json.loads(response.body)["error"]["message"]
        request.scope[_ACCESS].update(line)
        return response

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _counted(request, "/chat/completions", True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _counted(request, "/completions", False)

    def _model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created.get(name, started),
                "owned_by": "ir3de"}

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models() -> Any:
        state = holder["state"]
        return {"object": "list", "data": [_model_card(name)
                                           for name in [config.name, *state.experts]]}

    # client.models.retrieve(); :path: org/model names
    @app.api_route("/v1/models/{model:path}", methods=["GET", "HEAD"])
    async def model_info(model: str) -> Any:
        if model != config.name and model not in holder["state"].experts:
            if not model or model.endswith("/"):  # the unknown path's 404, with its hint
                raise StarletteHTTPException(404)
            return _error(404, f"model {_shown_name(model)} does not exist",
                          code="model_not_found",
                          param="model")
        return _model_card(model)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> Any:
        state = holder["state"]
        # 200 all the same: the gateway is up, and serves what it can; the experts that
        # refuse requests now, with the seconds until each is tried again
        return {"status": "ok", "experts": state.router.experts,
                "cooling_down": {n: round(s, 3) for n, s in cooldowns.refusing().items()}}

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def prometheus() -> Any:
        import prometheus_client as pc

        return Response(pc.generate_latest(metrics.registry), media_type=pc.CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------- admin API
    def _auth(request: Request) -> Any:
        if admin_token is None:
            return _error(404, "the admin API is off (no admin token configured)",
                          code="admin_disabled")
        # The header's bytes, as the client keys' are read: Starlette decodes them as
        # Latin-1, whose str.strip() also took the last byte of a UTF-8 "à" (0xA0, a
        # no-break space) or "Å" (0x85), so that such a token never matched.
        presented, refused = _bearer_token(
            request.headers.get("authorization", "").encode("latin-1"))
        # Digests compared in constant time, as for the client keys: the timing tells neither
        # how much of a guess matched nor the token's length.
        digest = hashlib.sha256(presented).digest()
        if refused is None and hmac.compare_digest(digest, admin_digest):
            return None
        # counted and logged by reason (as client keys are): someone guessing the token
        # shows in the metrics
        reason = refused or "invalid"
        metrics.admin_unauthorized.labels(reason).inc()
        request.scope[_ACCESS]["refused"] = reason
        return _error(401, "missing or wrong admin bearer token", kind="authentication_error",
                      headers={"www-authenticate": "Bearer"})

    class _BodyTooLarge(Exception):
        """A request's body went past its limit (see _bounded)."""

    def _too_large(declared: str | None, *, admin: bool) -> Any:
        """The 413 for a body of ``declared`` bytes (None: a chunked one, once past the
        limit): ``max_admin_body_bytes`` for the admin API, else ``max_body_bytes``."""
        limit = config.max_admin_body_bytes if admin else config.max_body_bytes
        size = f"of {declared} bytes" if declared is not None else f"of more than {limit} bytes"
        whose = (f"the admin API's limit of {limit} (max_admin_body_bytes)" if admin else
                 f"the limit of {limit}")
        return _error(413, f"request body {size} exceeds {whose}", code="body_too_large")

    def _admin_gone(request: Request) -> Any:
        """The answer to an admin client gone before its whole body arrived: a 499 in
        the access log, as for completions (an answer never sent has no status for
        _AccessLog to see), rather than Starlette's 500 and traceback."""
        request.scope[_ACCESS]["status"] = 499
        return _client_gone("sending the whole request body")

    def _bounded(request: Request, *, admin: bool) -> Any:
        """``request`` with its body bounded by ``max_body_bytes`` (``admin``:
        ``max_admin_body_bytes``), or the 413 for a body that says (``content-length``)
        it is larger (the 415 for a compressed one), refused before reading: a huge body
        never reaches memory. Reading the bounded request's body (``body()``,
        ``form()``) raises _BodyTooLarge once past the limit, a chunked one declaring no
        length included, without reading (nor waiting for) the rest: a 2 GB statistics
        upload was read whole before it was refused."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            # read as it is, a compressed body would be a 400 about invalid JSON or UTF-8
            return _error(415, f"request bodies in content-encoding {encoding!r} are not "
                               "accepted: send the body uncompressed", code="unsupported_encoding")
        limit = config.max_admin_body_bytes if admin else config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _too_large(declared, admin=admin)
        received = 0

        async def receive() -> Any:
            nonlocal received
            message = await request.receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        return Request(request.scope, receive)

    def _describe(state: _State) -> dict[str, Any]:
        counts = {n: s.n_tokens for n, s in state.router.stats.items()}
        return {"experts": [{"name": n, "url": _safe_url(e.url), "model": e.model or n,
                             "routed": n in counts, "tokens": counts.get(n),
                             **cooldowns.describe(n)}
                            for n, e in state.experts.items()],
                "threshold": state.threshold, "min_coverage": state.min_coverage,
                # what "auto" chose from the prompt counts (None for the ridge model)
                "smoothing": state.router.describe()["smoothing"],
                **_read_settings(state.router.config)}

    async def _swap(build: Any, request: Request, action: str) -> Any:
        """Build the next state off the event loop, persist it, then swap it in and log the
        change: one line naming the ``action`` and what ``build`` says it changed (never a
        secret: api_key_env is a variable's name, URLs lose their user and password)."""
        async with admin_lock:
            try:
                new, changed = await run_in_threadpool(build, holder["state"])
            except _UnknownExpert as exc:
                return _error(404, str(exc), code="expert_not_found")
            except _ExpertExists as exc:
                return _error(409, str(exc), code="expert_exists", param="name")
            except _Untrusted as exc:
                return _error(403, str(exc), code="untrusted_stats", param="stats")
            except (_Err, ValueError, TypeError) as exc:
                return _error(400, str(exc))
            try:
                await run_in_threadpool(_persist, new, config.state_dir, base)
            except (OSError, ValueError, _Err) as exc:  # ValueError: a number JSON lacks
                # not swapped in: what serves requests is what a restart would load
                return _error(500, f"the change was not applied: cannot save the gateway "
                                   f"state to {config.state_dir} ({exc})", kind="server_error")
            holder["state"] = new
            cooldowns.sync(new.experts)  # (no await in between: no request sees one alone)
            metrics.keep_only(new.experts)
            for name in [n for n in created if n != config.name and n not in new.experts]:
                del created[name]
            now = int(time.time())
            for name in new.experts:
                created.setdefault(name, now)
            _event(logging.INFO, {"event": "admin", "action": action, **changed,
                                  "client": request.client.host if request.client else None})
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

        bounded = _bounded(request, admin=True)
        if isinstance(bounded, JSONResponse):
            return bounded
        try:
            form = await bounded.form()
        except _BodyTooLarge:
            return _too_large(None, admin=True)
        except ClientDisconnect:
            return _admin_gone(request)
        upload, name, url = form.get("stats"), form.get("name"), form.get("url")
        if upload is None or not hasattr(upload, "read") or not isinstance(url, str):
            return _error(400, "send multipart fields 'stats' (a statistics file) and 'url' "
                               "(the expert's base URL), optionally 'name', 'model', "
                               "'api_key_env', 'api_key_header', 'timeout'")
        files = [f for f in ("name", "model", "api_key_env", "api_key_header", "timeout")
                 if f in form and not isinstance(form[f], str)]
        if files:
            return _error(400, f"send {', '.join(map(repr, files))} as text fields, not files")
        assert name is None or isinstance(name, str)  # a file as 'name' was refused above
        if name is not None:  # (sent empty it is refused: `-F name=$UNSET` names no expert)
            try:
                _check_expert_name(name, config.name)
            except _Err as exc:
                return _error(400, str(exc), param="name")
        data = await upload.read()
        # errors name the file as the client knows it, never the server's temporary copy
        filename = getattr(upload, "filename", None)
        label = f"the uploaded stats file {filename!r}" if filename \
            else "the uploaded stats file"
        expert_cls = _models()[0]
        pd = _pydantic()
        try:
            # timeout as sent: the model parses it, refusing inf, nan and numbers <= 0
            endpoint = expert_cls(url=url, model=form.get("model") or None,
                                  api_key_env=form.get("api_key_env") or None,
                                  api_key_header=form.get("api_key_header") or None,
                                  timeout=form.get("timeout") or 60.0)
        except pd.ValidationError as exc:
            fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            return _error(400, f"invalid expert endpoint: {_problems(exc)}",
                          param=fields.pop() if len(fields) == 1 else None)
        if endpoint.api_key_env and endpoint.api_key_env not in config.key_envs():
            # checked before whether it is set, which would tell about any variable
            return _error(400, f"api_key_env: {endpoint.api_key_env} is not allowed: "
                               f"{_key_envs_rule(config)}", param="api_key_env")
        problem = endpoint.api_key_env and _key_env_problem(endpoint.api_key_env)
        if problem:  # the expert would get requests without the key it was given
            return _error(400, f"api_key_env: {problem} in the gateway's environment; set "
                               "it before the gateway starts, or leave api_key_env out",
                          param="api_key_env")

        def build(state: _State) -> tuple[_State, dict[str, Any]]:
            with tempfile.TemporaryDirectory() as tmp:  # DomainStats reads from a path
                path = Path(tmp) / "upload.stats"
                try:
                    path.write_bytes(data)
                    return _build(state, DomainStats.load(path))
                except (_Err, ValueError, TypeError) as exc:
                    # the temporary path would only confuse the client: name the file
                    # it sent instead
                    message = str(exc).replace(str(path), label).replace(tmp, label)
                    if message == str(exc):
                        raise
                    raise _Err(message) from None

        def _build(state: _State, stats: Any) -> tuple[_State, dict[str, Any]]:
            # the router's errors name statistics by their source: the client's file name,
            # for now and for later uploads that clash with this one
            stats = replace(stats, source=label)
            if trusted is not None:  # before anything is solved
                from .signing import verify

                try:
                    verify(stats, trusted)
                except _Err as exc:
                    raise _Untrusted(str(exc)) from None
                if name and name != stats.domain:
                    # renaming drops the signature, and the restart would refuse the expert
                    raise _Untrusted(f"{label} was signed as {stats.domain!r}: with trust an "
                                     "expert keeps the name its statistics were signed with "
                                     "(a renamed expert holds no signature to check when the "
                                     "gateway restarts); leave 'name' out")
            expert = name or stats.domain
            _check_expert_name(expert, config.name)
            if expert in state.experts:  # routed or not: replacing it takes a DELETE first
                raise _ExpertExists(f"expert {expert!r} already exists; remove it first "
                                    f"(DELETE /admin/experts/{expert})")
            router = _copy_router(state.router)
            router.add_expert(expert, stats)
            return replace(state, router=router, experts={**state.experts, expert: endpoint}), \
                {"expert": expert, "url": _safe_url(endpoint.url), "model": endpoint.model,
                 "api_key_env": endpoint.api_key_env, "timeout": endpoint.timeout}

        return await _swap(build, request, "add_expert")

    @app.delete("/admin/experts/{name:path}")  # :path: model names like org/model
    async def admin_remove(name: str, request: Request) -> Any:
        denied = _auth(request)
        if denied:
            return denied

        def build(state: _State) -> tuple[_State, dict[str, Any]]:
            if name not in state.experts:  # 404; the refusals below are 400s
                raise _UnknownExpert(f"unknown expert {name!r}; experts are: "
                                     f"{', '.join(state.experts)}")
            if name == config.fallback:
                raise _Err(f"cannot remove {name!r}: it is the fallback expert")
            router = state.router
            routed = name in router.experts
            if routed:  # an endpoint the router does not route to has none
                router = _copy_router(router)
                router.remove_expert(name)
            return replace(state, router=router,
                           experts={n: e for n, e in state.experts.items() if n != name}), \
                {"expert": name, "routed": routed}

        return await _swap(build, request, "remove_expert")

    @app.patch("/admin/settings")
    async def admin_settings(request: Request) -> Any:
        denied = _auth(request)
        if denied:
            return denied
        bounded = _bounded(request, admin=True)
        if isinstance(bounded, JSONResponse):
            return bounded
        try:
            changes = _parse_json(await bounded.body())
        except ValueError as exc:
            return _error(400, str(exc))
        except _BodyTooLarge:
            return _too_large(None, admin=True)
        except ClientDisconnect:
            return _admin_gone(request)
        cuts = ("threshold", "min_coverage")
        allowed = {*_PATCHABLE, *cuts}
        if not isinstance(changes, dict) or not changes:
            return _error(400, f"send a JSON object with some of {sorted(allowed)}")
        unknown = [key for key in changes if key not in allowed]
        if unknown:
            return _error(400, f"unknown setting{'s' if len(unknown) > 1 else ''} "
                               f"{', '.join(map(repr, unknown))}; send a JSON object with "
                               f"some of {sorted(allowed)}",
                          param=unknown[0] if len(unknown) == 1 else None)

        def build(state: _State) -> tuple[_State, dict[str, Any]]:
            values = {}
            for cut in cuts:
                value = changes.get(cut, getattr(state, cut))
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not 0.0 <= value <= 1.0:
                    raise _Err(f"{cut} must be a number in [0, 1], got {value!r}")
                if value > 0 and config.fallback is None:  # accepted, it would do nothing
                    raise _Err(f"{cut} sends prompts to the fallback expert, and this gateway "
                               "has none: set fallback in the config first")
                values[cut] = float(value)
            params = {k: v for k, v in changes.items() if k not in cuts}
            # accepted, it would change nothing: say so instead
            _refuse_unread(state.router.config.with_settings(**params), params, "",
                           "the router would use")
            router = _copy_router(state.router)
            router.set_params(**params)
            before = {**{c: getattr(state, c) for c in cuts}, **_router_settings(state.router)}
            return replace(state, router=router, threshold=values["threshold"],
                           min_coverage=values["min_coverage"]), {"settings": {
                key: {"from": before.get(key), "to": value} for key, value in changes.items()}}

        return await _swap(build, request, "settings")

    return app


class _UnknownExpert(IR3DEError):
    """An admin change names an expert the gateway does not have (a 404, not a 400)."""


class _ExpertExists(IR3DEError):
    """An admin change adds an expert the gateway has already (a 409 Conflict)."""


class _Untrusted(IR3DEError):
    """Uploaded statistics not signed by a key the gateway's ``trust`` folder holds, or
    changed after signing (a 403: understood, and refused)."""


def _copy_router(router: Any) -> Any:
    """A router that can be changed without touching ``router``.

    A shallow copy suffices: a Router's solved state and statistics are never mutated in
    place, every change assigns new ones, so the copy's changes stay its own.
    """
    return copy.copy(router)


# --------------------------------------------------------------------------- running it
def _bind(host: str, port: int) -> list[Any]:
    """Sockets bound to ``host``:``port`` (every address it resolves to, as asyncio's
    create_server would bind), or IR3DEError naming the address: uvicorn binding it itself
    would log "startup complete" first, then the error, and exit with status 3."""
    import errno
    import socket

    sockets: list[Any] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # the IPv4 address gets a socket of its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else \
            exc.strerror or str(exc)
        raise IR3DEError(f"{where}: {reason}") from None
    return sockets


def _head_deadline_protocol() -> type:
    """uvicorn's h11 protocol with deadlines on what a client owes, keep_alive_seconds each:

    * every request's head (request line and headers), from when the connection opens or
      the previous response ends. uvicorn times a connection out only once a response has
      ended: one that sent nothing, or trickled its head a byte at a time, stayed open for
      ever, and a thousand such held every file descriptor of a default ulimit (no request
      got through, and asyncio logged each refused accept);
    * each next piece of a request's body (while the gateway reads it): a body that never
      came held its connection for ever too, and kept SIGTERM from finishing;
    * each next piece of its answer that a client takes once it has stopped reading (the
      transport's buffer full): a stream nobody read held the expert's generation and a
      pooled upstream connection for ever (max_connections of them: every request a 503).
      The connection is dropped; the gateway sees the client gone (499 before the answer,
      a stream ended early after it) and lets go of the expert."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _stall: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.SEND_BODY:
                self._arm()  # the next piece of the body
            elif self.conn.their_state is not h11.IDLE:  # the request is in (or refused)
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request's head

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall is None:
                self._watch(self.transport.get_write_buffer_size())

        def resume_writing(self) -> None:
            super().resume_writing()
            self._unwatch()

        def _watch(self, left: int) -> None:
            self._stall = self.loop.call_later(self.timeout_keep_alive, self._check, left)

        def _unwatch(self) -> None:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None

        def _check(self, left: int) -> None:
            # The buffer stays above the low-water mark until nearly all of a large answer
            # is read (uvicorn writes a whole answer at once): a client that took bytes
            # since the last look is still reading (one reading 20 MB at 1 MB/s was cut).
            now = self.transport.get_write_buffer_size()
            if now < left:
                self._watch(now)
                return
            # abort, not close: close would wait to send a buffer the client never reads
            self._stall = None
            self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._unwatch()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(self.timeout_keep_alive, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.SEND_BODY and self.flow.read_paused:
                self._arm()  # the gateway is not reading the body: not the client's wait
            elif self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self.transport.close()

    return Protocol


def serve(config_path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> int:
    """Run the gateway until it is stopped: what ``ir3de serve`` does. The access log goes
    to stderr (one JSON line per request, at ``log_level`` info or debug), the app is built
    (config, state and router errors are IR3DEErrors), the port bound (one in use is an
    IR3DEError too, with no server started, and checked first: nothing is saved then), then
    uvicorn serves the app on it."""
    try:
        import uvicorn
    except ImportError:
        raise IR3DEError("the gateway needs its extra: pip install 'ir3de[serve]'") from None
    level = logging.getLevelName(log_level.upper())  # (uvicorn's "trace" included)
    if not isinstance(level, int):
        raise IR3DEError(f"unknown log level {log_level!r}; choose one of critical, error, "
                         "warning, info, debug")
    config = load_config(config_path)
    # before the app: the warnings of loading the state (see _reconcile) go there too
    if not any(getattr(h, "_ir3de", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler._ir3de = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    # The access lines and admin events are INFO, cooldowns and state warnings WARNING:
    # --log-level warning keeps the latter, error and critical silence both.
    log.setLevel(level)
    claim = None
    if config.state_dir is not None:
        from .store import claim_folder

        state_dir = Path(config.state_dir)
        created = not state_dir.exists()
        # Before the state is read: another gateway's saves would overwrite this one's.
        claim = claim_folder(state_dir, "state_dir")
    sockets: list[Any] = []
    try:
        # The port first: the app's start saves the state merged with gateway.yaml, and a
        # start that then failed on a port in use had saved it (its warnings logged by a
        # gateway that never ran, and an edit reverted since taken as one).
        sockets = _bind(host, port)
        app = create_app(config)
    except BaseException:
        for sock in sockets:
            sock.close()
        if claim is not None:
            os.close(claim)
            if created:  # a start that failed leaves no empty state_dir behind
                with contextlib.suppress(OSError):
                    state_dir.rmdir()
        raise

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            # SIGHUP (a closed terminal, a reload by systemd) stops the gateway as SIGTERM
            # does, draining what is in flight: by default it killed it at once, streams
            # cut. uvicorn handles SIGINT and SIGTERM; a SIGHUP ignored (nohup) stays so.
            # Its handler is put back inside uvicorn's block, which raises the signals it
            # caught again on leaving: the process then ends by SIGHUP (129), as by SIGTERM
            # (143), and not with 0 as though nothing had stopped it.
            hup: int = getattr(signal, "SIGHUP", 0)  # (0: none here, as on Windows)
            caught = hup != 0 and signal.getsignal(hup) is not signal.SIG_IGN \
                and threading.current_thread() is threading.main_thread()
            with super().capture_signals():
                previous = signal.signal(hup, self.handle_exit) if caught else None
                try:
                    yield
                finally:
                    if caught:
                        signal.signal(hup, previous)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            # What shutdown_seconds cut, uvicorn cancels and does not wait for: the process
            # would end before those requests tell their clients (see _AccessLog).
            cut = [t for t in self.server_state.tasks if not t.done()]
            if cut:
                await asyncio.wait(cut, timeout=_CUT_SECONDS)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # (uvicorn says where it listens only when it binds)
                where = f"[{host}]" if ":" in host else host
                logging.getLogger("uvicorn.error").info(
                    "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", where, port)

    try:
        # access_log off: ir3de logs one structured line per request instead
        Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                              access_log=False, timeout_keep_alive=config.keep_alive_seconds,
                              timeout_graceful_shutdown=config.shutdown_seconds,
                              http=_head_deadline_protocol())
               ).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
        if claim is not None:
            os.close(claim)
    return 0
