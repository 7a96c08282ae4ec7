"""``genrec serve``: the tools over HTTP, on FastAPI and uvicorn (the extra ``genrec[serve]``).

One POST endpoint per tool, at the tool's name, taking the tool's arguments as the JSON body and
answering its result. Request models are built from the tool functions' signatures and bounds and
response models from the dataclasses they return (``genrec.serving.tools``: one source of truth),
so the OpenAPI document at /docs says exactly what the tools take. GET /health and GET /metrics
(Prometheus text format) watch the service.

Recommend requests that arrive within ``batch_window_ms`` of each other are decoded together in
one ``recommend_batch`` call (up to ``max_batch``); the model runs on one worker thread, off the
event loop, so /health answers while it decodes. Errors: a malformed body is 422 naming the field;
a GenrecError is 400 (an unknown item 404) as ``{"error": {"type", "message"}}``; anything else
is a 500 whose id is also in the log. Bodies over ``max_body_bytes`` are refused before parsing.

Every request costs a bounded amount: the Recommender's ``Limits`` cap the history read into a
prompt and the prompt's tokens; at most ``max_queue`` requests wait for or hold the model (one
more is answered 503 with ``Retry-After`` at once); a request still queued or decoding
``request_timeout_s`` after it arrived is answered 504, and a batch whose every request gave up
stops decoding at its next step, freeing the model.
"""


import asyncio
import functools
import hmac
import inspect
import logging
import time
import typing
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from ..errors import DeadlineError, GenrecError, UnknownItemError, require
from .admission import Admission, Metrics, Overloaded
from .batching import RecommendBatcher
from ..limits import Limits
from .tools import RESULTS, TOOLS, argument_bounds, model_thread, package_version

__all__ = ["ServeConfig", "create_app", "serve"]

log = logging.getLogger("genrec.serve")


@dataclass(frozen=True)
class ServeConfig:
    batch_window_ms: float = 5.0  # how long a recommend request waits for others to batch with
    max_batch: int = 16
    max_body_bytes: int = 1_000_000
    api_key: str | None = None  # required as "Authorization: Bearer KEY" or "X-API-Key: KEY"
    latency_window: int = 10_000  # recent latencies per endpoint kept for the percentiles
    max_queue: int = 64  # requests waiting for or holding the model; one more is answered 503 at once
    # padded prompt tokens one decode may take: a long prompt (a capped long history) is decoded
    # apart from the short ones instead of padding them all
    max_batch_tokens: int = 4096
    request_timeout_s: float = 60.0  # a request still queued or decoding after this is answered 504


# ---------------------------------------------------------------------- schemas from the tools
def request_model(name: str, limits: Limits) -> Any:
    """A pydantic model of tool ``name``'s arguments: the same types, defaults, descriptions and
    bounds as its function-calling definition; unknown fields are refused."""
    from pydantic import ConfigDict, Field, create_model

    from .tools import tool_docs

    func = TOOLS[name]
    hints = typing.get_type_hints(func)
    _, param_docs = tool_docs(func)
    ranges, lengths, items = argument_bounds(limits)
    fields: dict[str, Any] = {}
    for pname, param in list(inspect.signature(func).parameters.items())[1:]:
        bounds: dict[str, Any] = {"description": param_docs.get(pname)}
        if pname in ranges:
            bounds["ge"], bounds["le"] = ranges[pname]
        if pname in lengths:
            bounds["max_length"] = lengths[pname]
        if pname in items:
            bounds["max_length"] = items[pname]
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (Annotated[hints[pname], Field(**bounds)], default)
    title = "".join(part.title() for part in name.split("_")) + "Request"
    return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)


@functools.cache  # one set of models for every route
def error_responses() -> dict[int, Any]:
    """The error answers every tool endpoint documents: ``{"error": {"type", "message", ...}}``."""
    from pydantic import BaseModel, ConfigDict

    class ErrorDetail(BaseModel):
        model_config = ConfigDict(extra="allow")  # a validation error's fields, an internal error's id
        type: str
        message: str

    class ErrorResponse(BaseModel):
        error: ErrorDetail

    said = {
        400: "a request genrec refuses (a limit, a bad template or setting), naming the problem",
        401: "a missing or wrong API key",
        404: "an item that is neither an ID nor a title of the catalog",
        413: "a body over the size limit",
        422: "a body that does not match the request schema, naming the field",
        500: "an internal error; its id is in the server log",
        503: "the queue is full: retry after the Retry-After header's seconds",
        504: "no answer within the request's deadline",
    }
    return {status: {"model": ErrorResponse, "description": text} for status, text in said.items()}


# ---------------------------------------------------------------------- the app
def _error(status: int, kind: str, message: str, **extra: Any) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status)


class BodyLimit:
    """ASGI middleware: refuses a request body over ``max_bytes`` (by its Content-Length, or while
    it streams in) with 413, before anything parses it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = length is not None and (not length.isdigit() or int(length) > self.max_bytes)
        messages = []
        if not too_big and length is None:  # streamed: read it here, up to the limit
            size, more = 0, True
            while more:
                message = await receive()
                messages.append(message)
                size += len(message.get("body", b""))
                more = message.get("more_body", False) and message["type"] == "http.request"
                if size > self.max_bytes:
                    too_big = True
                    break
        if too_big:
            response = _error(413, "PayloadTooLarge", f"request body over {self.max_bytes} bytes")
            return await response(scope, receive, send)
        if messages:
            replay = iter(messages)

            async def receive_again() -> Any:
                return next(replay, None) or await receive()

            return await self.app(scope, receive_again, send)
        return await self.app(scope, receive, send)


def create_app(rec: Any, config: ServeConfig = ServeConfig()) -> Any:
    """The FastAPI application serving ``rec`` (a Recommender)."""
    require("fastapi", "serve", "genrec serve")
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse
    from starlette.exceptions import HTTPException

    metrics = Metrics(config.latency_window)
    admission = Admission(config.max_queue, config.request_timeout_s, metrics)
    executor = model_thread()
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: Any):
        batcher = RecommendBatcher(rec, executor, config.batch_window_ms / 1000, config.max_batch, metrics, config.max_batch_tokens)
        state["batcher"] = batcher
        batcher.start()
        # build the title index before the first request needs it; /health says when
        warm = asyncio.get_running_loop().run_in_executor(executor, rec.warm, "next_item")
        warm.add_done_callback(lambda f: state.update(ready=f.exception() is None))
        try:
            yield
        finally:
            await batcher.stop()
            executor.shutdown(wait=True)

    app = FastAPI(
        title="genrec",
        description=f"Recommendations from the catalog {rec.catalog.name!r} ({len(rec.catalog)} items) by {rec.lm.name}.",
        version=package_version(),
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    async def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer KEY, or X-API-Key)")

    known_paths = {"/health", "/metrics", *(f"/{name}" for name in TOOLS)}

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        path = request.url.path if request.url.path in known_paths else "other"  # bounded label values
        metrics.observe(path, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        fields = [{"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return _error(422, "ValidationError", message, fields=fields)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        kind = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return _error(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(GenrecError)
    async def genrec_error(request: Request, exc: GenrecError) -> Any:
        if isinstance(exc, Overloaded):
            response = _error(503, "Overloaded", str(exc))
            response.headers["Retry-After"] = str(admission.retry_after_s())
            return response
        if isinstance(exc, DeadlineError):
            return _error(504, "DeadlineExceeded", str(exc))
        return _error(404 if isinstance(exc, UnknownItemError) else 400, type(exc).__name__, str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Any:
        error_id = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s", error_id, request.url.path, exc_info=exc)
        return _error(500, "InternalError", f"internal error (id {error_id}, in the server log)", id=error_id)

    @app.get("/health", responses={503: {"description": "still starting: the title index is being built (status \"starting\")"}})
    async def health() -> Any:
        from fastapi.responses import JSONResponse

        body = {"status": "ok" if state["ready"] else "starting", "model": rec.lm.name, "catalog": rec.catalog.name,
                "catalog_size": len(rec.catalog), "index_ready": state["ready"]}  # fmt: skip
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    @app.get("/metrics", dependencies=[Depends(check_key)], response_class=PlainTextResponse)
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    for name, func in TOOLS.items():
        _add_tool_route(app, name, func, request_model(name, rec.limits), rec, executor, state, check_key, admission)
    return app


def _add_tool_route(
    app: Any, name: str, func: Any, model: Any, rec: Any, executor: Any, state: dict, check_key: Any, admission: Admission
) -> None:
    from fastapi import Body, Depends

    summary = (inspect.getdoc(func) or "").split("\n\n")[0]

    async def endpoint(body: Annotated[model, Body()]) -> Any:  # type: ignore[valid-type]
        args = body.model_dump()

        async def work(deadline: float) -> Any:
            if name == "recommend":
                return await state["batcher"].submit(args, deadline)
            return await asyncio.get_running_loop().run_in_executor(executor, lambda: func(rec, **args))

        return await admission.run(work)

    app.post(
        f"/{name}", response_model=RESULTS[name], summary=summary, name=name, dependencies=[Depends(check_key)],
        responses=error_responses(),
    )(endpoint)  # fmt: skip


def serve(rec: Any, config: ServeConfig = ServeConfig(), *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the service until SIGTERM or Ctrl-C: uvicorn then stops accepting, lets the requests in
    flight finish, and the batcher drains its queue before the process exits."""
    require("uvicorn", "serve", "genrec serve")
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler it
    # found: a handler that does nothing lets the process end normally (exit 0) after the drain
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(create_app(rec, config), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=60)
    finally:
        signal.signal(signal.SIGTERM, previous)
