"""The OpenAI-compatible HTTP server of the double (stdlib http.server, one thread per request).

Routes follow vLLM 0.11: every route exists, and one the model cannot serve answers 400 "The
model does not support ... API"; unknown paths are FastAPI's 404 {"detail": "Not Found"}. Only
/v1 paths need the API key, as in vLLM's auth middleware. Answers are tiny and deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .engine import Engine, StartupError, serve_request

WORDS = ("test", "double", "says", "hello", "from", "the", "lab")

Route = Callable[["Handler", dict[str, Any]], None]
RouteSpec = tuple[str | None, str, Route]  # (task the model must serve, API name, handler)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048  # uvicorn's backlog: a load's connections queue, as on vLLM
    engine: Engine
    counters: dict[str, int]


def make_server(engine: Engine, host: str, port: int) -> Server:
    """Bound but not listening: vLLM binds its socket early and accepts only once ready."""
    server = Server((host, port), Handler, bind_and_activate=False)
    server.allow_reuse_address = True
    server.server_bind()
    server.engine = engine
    server.counters = {"prompt": 0, "generation": 0, "requests": 0}
    return server


# ---------------------------------------------------------------- tiny deterministic "model"


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _generate(prompt: str, max_tokens: int) -> str:
    start = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % len(WORDS)
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(max_tokens))


def _vector(text: str, dim: int) -> list[float]:
    """A unit vector from the text's hash: equal texts embed equally."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] + i * 7) % 255) / 127.0 - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def _score(a: str, b: str) -> float:
    shared = set(a.lower().split()) & set(b.lower().split())
    return round(len(shared) / max(1, len(set(b.lower().split()))), 6)


# ---------------------------------------------------------------- the handler


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if not self.engine.args.disable_uvicorn_access_log:
            super().log_message(format, *args)

    @property
    def engine(self) -> Engine:
        return self.server.engine

    def do_GET(self) -> None:
        self._dispatch(GET_ROUTES)

    def do_POST(self) -> None:
        self._dispatch(POST_ROUTES)

    def _dispatch(self, routes: dict[str, RouteSpec]) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        # Read the body first, whatever the answer: an unread body would poison keep-alive.
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if path.startswith("/v1") and not self._authorized():
                return self._send(401, {"error": "Unauthorized"})
            if path not in routes:
                return self._send(404, {"detail": "Not Found"})
            task, api, route = routes[path]
            if task is not None and task != self.engine.task:
                raise ApiError(400, f"The model does not support {api} API")
            body = self._body(raw) if self.command == "POST" else {}
            if task is not None:
                self._serve()
            route(self, body)
        except ApiError as e:
            self._send(e.status, {"error": {"message": e.message, "type": e.kind,
                                            "param": None, "code": e.status}})

    def _serve(self) -> None:
        """The GPU side of one inference request (engine.serve_request: no growth, or the
        configured leak); a leak that no longer fits fails it as HIP's OOM fails vLLM's."""
        try:
            serve_request(self.engine)
        except StartupError as e:
            raise ApiError(500, str(e), "InternalServerError") from e

    def _authorized(self) -> bool:
        keys = self.engine.args.api_key  # a list: --api-key takes several keys since 0.10.1
        keys = [keys] if isinstance(keys, str) else keys or []
        return not keys or self.headers.get("Authorization") in [f"Bearer {k}" for k in keys]

    def _body(self, raw: bytes) -> dict[str, Any]:
        if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
            return _form_fields(raw)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            raise ApiError(400, f"JSON decode error: {e.msg}") from e
        if not isinstance(body, dict):
            raise ApiError(400, "Input should be a valid dictionary")
        self._check_model(body)
        return body

    def _check_model(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model not in (None, *self.engine.served_names):
            raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError")

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


def _form_fields(raw: bytes) -> dict[str, Any]:
    """The text fields of a multipart body (the audio file itself is ignored)."""
    fields = {}
    for name, value in re.findall(rb'name="([^"]+)"\r\n\r\n(.*?)\r\n--', raw, re.S):
        fields[name.decode()] = value.decode(errors="replace")
    return fields


# ---------------------------------------------------------------- routes


def _health(h: Handler, _: dict[str, Any]) -> None:
    if h.engine.fail_mode == "health":
        return h._send(500, {"error": "EngineDeadError (vllm-test-double fault injection)"})
    h._send(200, b"", "text/plain")


def _version(h: Handler, _: dict[str, Any]) -> None:
    from ._deps import emulated_version

    h._send(200, {"version": emulated_version()})


def _models(h: Handler, _: dict[str, Any]) -> None:
    created = int(time.time())
    data = [{"id": name, "object": "model", "created": created, "owned_by": "vllm",
             "root": h.engine.args.model, "parent": None, "max_model_len": h.engine.max_model_len,
             "permission": []} for name in h.engine.served_names]
    h._send(200, {"object": "list", "data": data})


def _max_tokens(h: Handler, body: dict[str, Any], prompt_tokens: int) -> int:
    limit = h.engine.max_model_len
    wanted = body.get("max_tokens") or body.get("max_completion_tokens")
    wanted = int(wanted) if wanted is not None else max(1, min(16, limit - prompt_tokens))
    if prompt_tokens + wanted > limit:
        raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, "
                       f"you requested {prompt_tokens + wanted} tokens ({prompt_tokens} in the "
                       f"messages, {wanted} in the completion). Please reduce the length of the "
                       "messages or completion.")
    return wanted


def _usage(h: Handler, prompt: int, completion: int) -> dict[str, int]:
    h.server.counters["prompt"] += prompt
    h.server.counters["generation"] += completion
    h.server.counters["requests"] += 1
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion,
            "completion_tokens": completion}


def _completions(h: Handler, body: dict[str, Any]) -> None:
    prompt = body.get("prompt", "")
    prompt = " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)
    used = _tokens(prompt)
    n = _max_tokens(h, body, used)
    text = _generate(prompt, n)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": body.get("model") or h.engine.name}
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
              "stop_reason": None}
    if body.get("stream"):
        return h._stream([head | {"choices": [choice]}])
    h._send(200, head | {"choices": [choice], "usage": _usage(h, used, n)})


def _chat(h: Handler, body: dict[str, Any]) -> None:
    messages = body.get("messages") or []
    prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    used = _tokens(prompt)
    n = _max_tokens(h, body, used)
    text = _generate(prompt, n)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": body.get("model") or h.engine.name}
    if body.get("stream"):
        delta = {"index": 0, "delta": {"role": "assistant", "content": text},
                 "finish_reason": "length"}
        return h._stream([head | {"object": "chat.completion.chunk", "choices": [delta]}])
    message: dict[str, Any] = {"role": "assistant", "content": text, "tool_calls": [],
                               "reasoning_content": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length",
              "stop_reason": None}
    h._send(200, head | {"object": "chat.completion", "choices": [choice],
                         "usage": _usage(h, used, n)})


def _inputs(body: dict[str, Any], key: str = "input") -> list[str]:
    value = body.get(key)
    if value is None:
        raise ApiError(400, f"Field required: {key}")
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _embeddings(h: Handler, body: dict[str, Any]) -> None:
    texts = _inputs(body)
    dim = int(body.get("dimensions") or h.engine.facts.hidden_size)
    data = [{"index": i, "object": "embedding", "embedding": _vector(t, dim)}
            for i, t in enumerate(texts)]
    used = sum(_tokens(t) for t in texts)
    h._send(200, {"id": f"embd-{uuid.uuid4().hex}", "object": "list",
                  "created": int(time.time()), "model": h.engine.name, "data": data,
                  "usage": _usage(h, used, 0)})


def _pooling(h: Handler, body: dict[str, Any]) -> None:
    texts = _inputs(body)
    dim = h.engine.facts.hidden_size
    data = [{"index": i, "object": "pooling", "data": _vector(t, dim)}
            for i, t in enumerate(texts)]
    h._send(200, {"id": f"pool-{uuid.uuid4().hex}", "object": "list",
                  "created": int(time.time()), "model": h.engine.name, "data": data,
                  "usage": _usage(h, sum(_tokens(t) for t in texts), 0)})


def _score_route(h: Handler, body: dict[str, Any]) -> None:
    first, second = _inputs(body, "text_1"), _inputs(body, "text_2")
    if len(first) == 1:  # one query against many texts, as vLLM's /score allows
        first = first * len(second)
    if len(first) != len(second):
        raise ApiError(400, "text_1 and text_2 must have the same number of items")
    pairs = list(zip(first, second, strict=True))
    data = [{"index": i, "object": "score", "score": _score(a, b)}
            for i, (a, b) in enumerate(pairs)]
    used = sum(_tokens(a) + _tokens(b) for a, b in pairs)
    h._send(200, {"id": f"score-{uuid.uuid4().hex}", "object": "list",
                  "created": int(time.time()), "model": h.engine.name, "data": data,
                  "usage": _usage(h, used, 0)})


def _rerank(h: Handler, body: dict[str, Any]) -> None:
    query, documents = str(body.get("query", "")), _inputs(body, "documents")
    scores = sorted(((_score(query, d), i) for i, d in enumerate(documents)), key=lambda r: -r[0])
    results = [{"index": i, "document": {"text": documents[i]}, "relevance_score": s}
               for s, i in scores]
    top = int(body.get("top_n") or len(results))
    used = sum(_tokens(query) + _tokens(d) for d in documents)
    h._send(200, {"id": f"rerank-{uuid.uuid4().hex}", "model": h.engine.name,
                  "usage": {"total_tokens": _usage(h, used, 0)["total_tokens"]},
                  "results": results[:top]})


def _classify(h: Handler, body: dict[str, Any]) -> None:
    data = [{"index": i, "label": "LABEL_0", "probs": [1.0], "num_classes": 1}
            for i, _ in enumerate(_inputs(body))]
    h._send(200, {"id": f"classify-{uuid.uuid4().hex}", "object": "list",
                  "created": int(time.time()), "model": h.engine.name, "data": data})


def _transcribe(h: Handler, body: dict[str, Any]) -> None:
    text = "test double transcription"
    if body.get("response_format") in ("text", "srt", "vtt"):
        return h._send(200, text.encode(), "text/plain; charset=utf-8")
    h._send(200, {"text": text, "usage": {"type": "duration", "seconds": 1}})


def _metrics(h: Handler, _: dict[str, Any]) -> None:
    name, counters = h.engine.name, h.server.counters
    label = f'{{engine="0",model_name="{name}"}}'
    lines = [
        "# vllm-test-double metrics (a few of vLLM's, same names)",
        f"vllm:num_requests_running{label} 0.0",
        f"vllm:num_requests_waiting{label} 0.0",
        f"vllm:gpu_cache_usage_perc{label} 0.0",
        f"vllm:kv_cache_usage_perc{label} 0.0",
        f"vllm:prompt_tokens_total{label} {float(counters['prompt'])}",
        f"vllm:generation_tokens_total{label} {float(counters['generation'])}",
        f"vllm:request_success_total{label} {float(counters['requests'])}",
    ]
    h._send(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")


GET_ROUTES: dict[str, RouteSpec] = {
    "/health": (None, "", _health), "/ping": (None, "", _health),
    "/version": (None, "", _version), "/v1/models": (None, "", _models),
    "/metrics": (None, "", _metrics),
}
POST_ROUTES: dict[str, RouteSpec] = {
    "/v1/completions": ("generate", "Completions", _completions),
    "/v1/chat/completions": ("generate", "Chat Completions", _chat),
    "/v1/embeddings": ("embed", "Embeddings", _embeddings),
    "/pooling": ("embed", "Pooling", _pooling),
    "/score": ("classify", "Score", _score_route), "/v1/score": ("classify", "Score", _score_route),
    "/rerank": ("classify", "Rerank", _rerank), "/v1/rerank": ("classify", "Rerank", _rerank),
    "/v2/rerank": ("classify", "Rerank", _rerank),
    "/classify": ("classify", "Classification", _classify),
    "/v1/audio/transcriptions": ("transcription", "Transcriptions", _transcribe),
    "/v1/audio/translations": ("transcription", "Translations", _transcribe),
}
