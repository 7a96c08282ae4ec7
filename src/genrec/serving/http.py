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
"""


import asyncio
import collections
import hmac
import inspect
import logging
import time
import typing
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from ..errors import GenrecError, UnknownItemError, require
from ..limits import Limits
from ..tasks.recommend import default_template
from .tools import RESULTS, TOOLS, argument_bounds, package_version

__all__ = ["ServeConfig", "create_app", "serve"]

log = logging.getLogger("genrec.serve")


@dataclass(frozen=True)
class ServeConfig:
    batch_window_ms: float = 5.0  # how long a recommend request waits for others to batch with
    max_batch: int = 16
    max_body_bytes: int = 1_000_000
    api_key: str | None = None  # required as "Authorization: Bearer KEY" or "X-API-Key: KEY"
    latency_window: int = 10_000  # recent latencies per endpoint kept for the percentiles


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


# ---------------------------------------------------------------------- metrics
class Metrics:
    """Request counts, errors, latency percentiles and batch sizes, as Prometheus text."""

    def __init__(self, window: int) -> None:
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency: dict[str, collections.deque[float]] = collections.defaultdict(lambda: collections.deque(maxlen=window))
        self.batch_sizes: collections.Counter[int] = collections.Counter()

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] += 1
        self.latency[path].append(seconds)

    def render(self) -> str:
        import numpy as np

        lines = ["# HELP genrec_requests_total Requests answered, by endpoint and status.", "# TYPE genrec_requests_total counter"]
        lines += [f'genrec_requests_total{{endpoint="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())]
        lines += ["# HELP genrec_errors_total Requests answered with a 4xx or 5xx status.", "# TYPE genrec_errors_total counter"]
        errors: collections.Counter[str] = collections.Counter()
        for (p, s), n in self.requests.items():
            if s >= 400:
                errors[p] += n
        lines += [f'genrec_errors_total{{endpoint="{p}"}} {n}' for p, n in sorted(errors.items())]
        lines += ["# HELP genrec_request_latency_seconds Latency over the most recent requests.", "# TYPE genrec_request_latency_seconds summary"]
        for path, values in sorted(self.latency.items()):
            data = np.asarray(values)
            for q in (0.5, 0.95, 0.99):
                lines.append(f'genrec_request_latency_seconds{{endpoint="{path}",quantile="{q}"}} {np.quantile(data, q):.6f}')
            lines.append(f'genrec_request_latency_seconds_sum{{endpoint="{path}"}} {data.sum():.6f}')
            lines.append(f'genrec_request_latency_seconds_count{{endpoint="{path}"}} {len(data)}')
        lines += ["# HELP genrec_batch_size Recommend requests decoded together.", "# TYPE genrec_batch_size counter"]
        lines += [f'genrec_batches_total{{size="{size}"}} {n}' for size, n in sorted(self.batch_sizes.items())]
        lines += ["# HELP genrec_resident_memory_bytes Resident memory of the server process.", "# TYPE genrec_resident_memory_bytes gauge"]
        lines.append(f"genrec_resident_memory_bytes {_rss_bytes()}")
        return "\n".join(lines) + "\n"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------- dynamic batching
@dataclass
class _Pending:
    args: dict[str, Any]
    future: asyncio.Future


class RecommendBatcher:
    """Collects recommend requests for ``window_s`` (or until ``max_batch``) and decodes each
    group of compatible ones (same k and template) in one ``recommend_batch`` call. A request the
    library refuses fails alone; the others of its batch are still served."""

    def __init__(self, rec: Any, executor: ThreadPoolExecutor, window_s: float, max_batch: int, metrics: Metrics) -> None:
        self.rec, self.executor, self.window_s, self.max_batch, self.metrics = rec, executor, window_s, max_batch, metrics
        self.queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish everything queued, then stop."""
        await self.queue.put(None)
        if self.task is not None:
            await self.task

    async def submit(self, args: dict[str, Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(args, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self.queue.get()
            if first is None:
                break
            batch = [first]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                try:  # requests that queued during the last decode are taken at once
                    item = self.queue.get_nowait() if not self.queue.empty() else await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except (asyncio.TimeoutError, ValueError):
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self.metrics.batch_sizes[len(batch)] += 1
            try:
                outcomes = await loop.run_in_executor(self.executor, self._decode, [p.args for p in batch])
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one batch
                outcomes = [exc] * len(batch)
            for pending, outcome in zip(batch, outcomes):
                if pending.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)

    def _decode(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Each request's result (the tool's JSON) or the exception it raised."""
        outcomes: list[Any] = [None] * len(requests)
        groups: dict[tuple[int, str], list[int]] = {}
        for i, args in enumerate(requests):
            history, request = args.get("history") or [], args.get("request")
            template = default_template(history, request)
            try:  # refuse a bad request alone, before it can fail its batch
                self.rec.pipeline.prepare(history, template, request=request, exclude=args.get("exclude") or [], k=args["k"])
                self.rec.limits.check_k(args["k"])
            except Exception as exc:  # noqa: BLE001 - handed to that request's handler
                outcomes[i] = exc
                continue
            groups.setdefault((args["k"], template), []).append(i)
        for (k, template), members in groups.items():
            try:
                results = self.rec.recommend_batch(
                    [requests[i].get("history") or [] for i in members], k,
                    requests=[requests[i].get("request") for i in members],
                    excludes=[requests[i].get("exclude") or [] for i in members],
                    template=template, batch_size=len(members),
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001
                for i in members:
                    outcomes[i] = exc
                continue
            for i, recs in zip(members, results):
                outcomes[i] = recs.to_dicts()
        return outcomes


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
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrec-model")  # one model, one decoder at a time
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: Any):
        batcher = RecommendBatcher(rec, executor, config.batch_window_ms / 1000, config.max_batch, metrics)
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
        return _error(404 if isinstance(exc, UnknownItemError) else 400, type(exc).__name__, str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Any:
        error_id = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s", error_id, request.url.path, exc_info=exc)
        return _error(500, "InternalError", f"internal error (id {error_id}, in the server log)", id=error_id)

    @app.get("/health")
    async def health() -> Any:
        from fastapi.responses import JSONResponse

        body = {"status": "ok" if state["ready"] else "starting", "model": rec.lm.name, "catalog": rec.catalog.name,
                "catalog_size": len(rec.catalog), "index_ready": state["ready"]}  # fmt: skip
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    @app.get("/metrics", dependencies=[Depends(check_key)], response_class=PlainTextResponse)
    async def prometheus() -> Any:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    for name, func in TOOLS.items():
        _add_tool_route(app, name, func, request_model(name, rec.limits), rec, executor, state, check_key)
    return app


def _add_tool_route(app: Any, name: str, func: Any, model: Any, rec: Any, executor: Any, state: dict, check_key: Any) -> None:
    from fastapi import Body, Depends

    summary = (inspect.getdoc(func) or "").split("\n\n")[0]

    async def endpoint(body: Annotated[model, Body()]) -> Any:  # type: ignore[valid-type]
        args = body.model_dump()
        if name == "recommend":
            return await state["batcher"].submit(args)
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: func(rec, **args))

    app.post(f"/{name}", response_model=RESULTS[name], summary=summary, name=name, dependencies=[Depends(check_key)])(endpoint)


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
