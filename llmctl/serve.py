"""`llmctl serve RUN_OR_DIR`: the model of a finished run (or a model folder, or an int8 folder from `llmctl
compress`) as an HTTP service on FastAPI + uvicorn.

    llmctl serve runs/summarization                     # http://127.0.0.1:8000
    curl -s localhost:8000/v1/summarize -d '{"text": "..."}'

Endpoints follow the model's task, and the task object owns them (`Task.endpoint`, `serve_request`, `serve_batch`,
`serve_response` in llmctl/tasks/): e.g. POST /v1/summarize ({"text"} -> {"summary"}), /v1/classify, /v1/qa.
POST /v1/completions (the OpenAI request and response shape, `Completions` here) serves a causal LM that was not
fine-tuned for a task. GET /health and GET /v1/models (name, task, metrics of the run) always answer. Nothing here
depends on which task a model does: a new task is served by giving its module those hooks.

How a request is answered. Requests go into one bounded queue; one batching loop takes up to --max-batch-size
requests that can share a call (the same endpoint and batch key, e.g. generation settings), waiting at most
--max-wait-ms for more once the first has arrived, and runs them as one batch in a worker thread while the next
requests queue up. Each batch goes through the task object's `serve_batch` (its `predict`, or llmctl.generation:
length-sorted, KV cache), with the settings `summarize` and `eval` use, so a served output equals theirs for the
same input.

Errors are JSON, `{"error": {"message", "type", "code"}}`, never a stack trace: a body over --max-body-bytes
(413), an input over --max-input-tokens (413 with --long-input reject; cut to fit with truncate, the default), a
max_new_tokens above --max-new-tokens-cap (400), malformed JSON or a missing field (400), an endpoint of another
task (400), a full queue (503), a request that waited longer than --timeout seconds (504), and anything
unexpected (500, logged on the server). The server keeps serving after each. SIGTERM (or Ctrl-C) stops accepting
connections, answers 503 to new requests on open ones, finishes the requests in flight, then exits.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request, imported inside
# build_app so that `llmctl --help` does not import it) from the functions themselves.
import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from llmctl import runs
from llmctl.tasks.base import RequestError, request_number


class ServeError(runs.RunError):
    """A model or option that cannot be served (one line, at start-up)."""


@dataclass
class Limits:
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 256
    max_body_bytes: int = 1_000_000
    max_input_tokens: int | None = None  # None: the model's own input budget
    long_input: str = "truncate"  # or "reject" (413)
    max_new_tokens_cap: int = 512
    timeout: float = 60.0


# ----------------------------------------------------------------------------------------------------- engine


def endpoints() -> dict[str, str]:
    """name -> POST endpoint of everything serve answers: each servable task's, then completions."""
    from llmctl import tasks as registry

    found = {name: task.endpoint for name, task in registry.REGISTRY.items() if task.endpoint is not None}
    return {**found, Completions.name: Completions.endpoint}


class Engine:
    """The loaded model and how a batch of requests of one kind becomes outputs; one batch at a time.

    `handler` answers the requests: the model's task object (its `serve_request`, `serve_batch` and
    `serve_response`), or `Completions` for a causal LM that records no fine-tuning task."""

    def __init__(self, model: str, limits: Limits, device=None):
        from llmctl import evaluation, modeling
        from llmctl import tasks as registry
        from llmctl.generate_cli import load_generator, resolve_model

        self.path = resolve_model(model)
        if not Path(self.path).is_dir():
            raise ServeError(f"{model}: no such run or model directory")
        config = modeling.load_config(self.path)
        info = getattr(config, "llmctl", None) or {}
        task_name = info.get("task") if isinstance(info, dict) else None
        self.loaded = self.gen = None
        self.default_new_tokens = None
        if task_name in registry.REGISTRY and registry.get(task_name).finetunable:
            if registry.get(task_name).endpoint is None:
                served = [name for name in endpoints() if name != Completions.name]
                raise ServeError(f"{self.path}: a {task_name} model has no endpoint; serve takes "
                                 f"{', '.join(served[:-1])} and {served[-1]} models, and causal LMs "
                                 f"({Completions.endpoint})")
            self.loaded = evaluation.load_model_dir(self.path, device=device or "cpu")
            self.handler = self.loaded.task
            self.model, self.tokenizer, self.spec = self.loaded.model, self.loaded.tokenizer, self.loaded.spec
            self.settings = self._task_settings(info)
        else:
            self.gen = load_generator(self.path, device=device or "cpu")
            if self.gen.family != "causal":
                raise ServeError(f"{self.path}: {Completions.endpoint} serves decoder-only language models; this "
                                 f"{self.gen.family} model records no task")
            self.handler = Completions(self.gen)
            self.model, self.tokenizer, self.spec = self.gen.model, self.gen.tokenizer, None
            from llmctl.generate_cli import DEFAULT_MAX_NEW_TOKENS, settings_for

            self.settings = settings_for(self.gen, max_new_tokens=None, sampling={"do_sample": False})
            self.default_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, self.settings.max_new_tokens)
        self.kind, self.endpoint = self.handler.name, self.handler.endpoint
        self.limits = limits
        self.input_limit = self._input_limit()
        self.name, self.metrics, self.created = self._describe()

    # -- settings, as `summarize` (generation) and `eval` (classification, QA) take them

    def _task_settings(self, info: dict):
        from llmctl import evaluation
        from llmctl import recipe as recipe_mod

        r = self.loaded.recipe
        if self.loaded.task.generates:
            from llmctl.summarize import default_settings

            if r is not None:
                return evaluation.generation_settings(r.generation, self.spec)
            return default_settings(info)
        return evaluation.generation_settings(r.generation if r is not None else recipe_mod.GenerationSection(),
                                              self.spec)

    def _input_limit(self) -> int:
        """Input tokens a request may hold: --max-input-tokens, at most what the model reads."""
        model_limit = self.handler.serve_input_limit(self.model, self.tokenizer, self.spec, self.settings)
        model_limit = model_limit or 1_000_000
        given = self.limits.max_input_tokens
        return min(given, model_limit) if given else model_limit

    def _describe(self) -> tuple[str, dict, int]:
        """The model's name (its run's or folder's), the metrics its run recorded, and when it was made."""
        from llmctl import compress

        folder = Path(self.path)
        run_dir = folder.parent if (folder.parent / "results.json").is_file() and folder.name == "final" else None
        name = (run_dir or folder).resolve().name
        metrics: dict = {}
        source = None
        if run_dir is not None:
            source = run_dir / "results.json"
            try:
                metrics = runs.read_json(source).get("metrics") or {}
            except (OSError, ValueError):
                metrics = {}
        elif (folder / compress.REPORT).is_file():
            source = folder / compress.REPORT
            try:
                metrics = runs.read_json(source).get("metrics_after") or {}
            except (OSError, ValueError):
                metrics = {}
        created = int((source or folder / "config.json").stat().st_mtime)
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return name, numeric, created

    # -- requests: checked and turned into work items before they queue (the handler's serve_request, which
    # -- calls back fit, check and new_tokens: llmctl.tasks.base.ServeInputs)

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def fit(self, text: str, what: str) -> str:
        """`text` within the input limit: cut to fit (truncate) or a 413 (reject)."""
        n = self.tokens(text)
        if n <= self.input_limit:
            return text
        if self.limits.long_input == "reject":
            raise RequestError(413, f"'{what}' has {n} tokens; this server takes at most {self.input_limit}",
                               "input_too_long")
        from llmctl.tasks.generative import fit_source

        return fit_source(self.tokenizer, text, self.input_limit)

    def check(self, text: str, what: str) -> None:
        """A 413 for `text` over the input limit under --long-input reject; nothing under truncate."""
        if self.limits.long_input == "reject":
            self.fit(text, what)

    def new_tokens(self, value, key: str) -> int:
        if value is None:
            default = self.spec.max_new_tokens if self.spec is not None else self.default_new_tokens
            return min(default or self.settings.max_new_tokens, self.limits.max_new_tokens_cap)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(400, f"'{key}' must be a positive integer, got {value!r}", "invalid_request")
        if value > self.limits.max_new_tokens_cap:
            raise RequestError(400, f"'{key}' is {value}; this server allows at most "
                                    f"{self.limits.max_new_tokens_cap}", "max_new_tokens_too_large")
        return value

    def parse(self, body: dict) -> tuple[tuple, object]:
        """(batch key, work item) of a request body; requests with the same key share a batch."""
        key, item = self.handler.serve_request(body, self)
        return (self.kind, *key), item

    # -- a batch of work items of one key: one call into the model

    def run(self, key: tuple, items: list) -> list:
        return self.handler.serve_batch(self.model, key[1:], items, self.tokenizer, self.spec, self.settings)

    def response(self, result) -> dict:
        return self.handler.serve_response(self.name, result)


class Completions:
    """POST /v1/completions (the OpenAI request and response shape) for a decoder-only language model that records
    no fine-tuning task: the serving hooks of `llmctl.tasks.base.Task`, for a model without a task."""

    name = "completions"
    endpoint = "/v1/completions"

    def __init__(self, gen):
        self.gen = gen  # llmctl.generate_cli.Generator: builds the model inputs as `generate` does

    def serve_input_limit(self, model, tokenizer, spec, settings) -> int | None:
        from llmctl import generation

        return generation.source_limit(model, tokenizer, settings, encoder_decoder=False)

    def serve_request(self, body: dict, inputs) -> tuple[tuple, object]:
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise RequestError(400, "'prompt' must be a non-empty string or a list of them", "invalid_request")
        new = inputs.new_tokens(body.get("max_tokens"), "max_tokens")
        temperature = request_number(body, "temperature", 1.0, low=0.0)
        top_p = request_number(body, "top_p", 1.0, low=0.0, high=1.0)
        sample = temperature > 0 and (body.get("temperature") is not None or body.get("top_p") is not None)
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise RequestError(400, "'stop' must be a string or a list of strings", "invalid_request")
        if body.get("n", 1) != 1:
            raise RequestError(400, "'n' must be 1", "invalid_request")
        if body.get("stream"):
            raise RequestError(400, "'stream' is not supported", "invalid_request")
        fitted = [inputs.fit(p, "prompt") for p in prompts]
        key = (new, sample, temperature if sample else 1.0, top_p if sample else 1.0)
        return key, {"prompts": fitted, "stops": stops}

    def serve_batch(self, model, key: tuple, items: list, tokenizer, spec, settings) -> list:
        from llmctl import generation

        def tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        new, sample, temperature, top_p = key
        flat = [p for it in items for p in it["prompts"]]
        settings = replace(settings, max_new_tokens=new, do_sample=sample, temperature=temperature or 1.0,
                           top_p=top_p or 1.0, batch_size=max(len(flat), 1))
        report = generation.generate(model, tokenizer, self.gen.model_inputs(flat), settings)
        out, k = [], 0
        for it in items:
            choices = []
            for i, prompt in enumerate(it["prompts"]):
                text, capped = report.outputs[k], report.flags[k]
                k += 1
                reason = "length" if capped else "stop"
                for s in it["stops"]:
                    if s in text:
                        text, reason = text[:text.index(s)], "stop"
                choices.append({"text": text, "index": i, "logprobs": None, "finish_reason": reason,
                                "prompt_tokens": tokens(prompt), "completion_tokens": tokens(text)})
            out.append(choices)
        return out

    def serve_response(self, model_name: str, result: list) -> dict:
        prompt_tokens = sum(c.pop("prompt_tokens") for c in result)
        completion_tokens = sum(c.pop("completion_tokens") for c in result)
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": result,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


# ---------------------------------------------------------------------------------------------------- batching


@dataclass
class _Work:
    key: tuple
    item: object
    future: asyncio.Future
    size: int = 0  # input length in characters, for length-sorted batches


@dataclass
class Stats:
    served: int = 0
    batches: int = 0
    batched_requests: int = 0
    largest_batch: int = 0
    errors: dict = field(default_factory=dict)


class Batcher:
    """One bounded queue, one loop that forms batches, one worker thread that runs them."""

    def __init__(self, engine: Engine, limits: Limits):
        from concurrent.futures import ThreadPoolExecutor

        self.engine, self.limits = engine, limits
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=limits.max_queue)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmctl-model")
        self.stats = Stats()
        self.in_flight = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=True)

    async def submit(self, key: tuple, item, size: int):
        """The result for one work item; RequestError 503 when the queue is full, 504 after the timeout."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Work(key, item, future, size))
        except asyncio.QueueFull:
            raise RequestError(503, f"the server is busy ({self.limits.max_queue} requests queued); retry later",
                               "overloaded") from None
        self.in_flight += 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.limits.timeout)
        except asyncio.TimeoutError:
            future.cancel()  # the loop skips it if it has not run yet
            raise RequestError(504, f"no answer within {self.limits.timeout:g} s", "timeout") from None
        finally:
            self.in_flight -= 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        held: list[_Work] = []  # taken from the queue while forming a batch of another key
        while True:
            first = held.pop(0) if held else await self.queue.get()
            if first.future.done():
                continue
            batch, rest = [first], []
            for w in held:
                (batch if w.key == first.key and len(batch) < self.limits.max_batch_size else rest).append(w)
            held = rest
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while len(batch) < self.limits.max_batch_size:
                try:
                    w = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        w = await asyncio.wait_for(self.queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                (batch if w.key == first.key else held).append(w)
            batch = [w for w in batch if not w.future.done()]
            if not batch:
                continue
            batch.sort(key=lambda w: w.size, reverse=True)  # similar lengths together, as in summarize
            try:
                results = await loop.run_in_executor(self.pool, self.engine.run, first.key,
                                                     [w.item for w in batch])
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error, the loop goes on
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.batched_requests += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for w, r in zip(batch, results):
                if not w.future.done():
                    w.future.set_result(r)


# --------------------------------------------------------------------------------------------------------- app


def _error(status: int, message: str, kind: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def build_app(engine: Engine, limits: Limits):
    """The FastAPI application around `engine`."""
    import contextlib
    import logging

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    log = logging.getLogger("llmctl.serve")
    state = {"draining": False, "batcher": None, "on_stop": None}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(engine, limits)
        state["batcher"].start()
        yield
        await state["batcher"].stop()  # after uvicorn has finished the requests in flight
        if state["on_stop"] is not None:
            state["on_stop"](state["batcher"].stats)

    app = FastAPI(title="llmctl serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # 404 and 405 in the same shape as every other error
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        log.error("serve: %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return _error(500, f"internal error: {type(exc).__name__}", "internal_error")

    async def read_json(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise RequestError(413, f"request body of {int(declared):,} bytes; this server takes at most "
                                    f"{limits.max_body_bytes:,}", "body_too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limits.max_body_bytes:
                raise RequestError(413, f"request body over {limits.max_body_bytes:,} bytes", "body_too_large")
        try:
            body = json.loads(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, "malformed JSON: the body is not UTF-8", "invalid_json") from None
        except ValueError as exc:
            raise RequestError(400, f"malformed JSON: {exc}", "invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError(400, f"the body must be a JSON object, got {type(body).__name__}", "invalid_request")
        return body

    async def answer(kind: str, request: Request):
        if state["draining"]:
            return _error(503, "the server is shutting down", "shutting_down")
        try:
            if kind != engine.kind:
                raise RequestError(400, f"this model does {engine.kind}, not {kind}; use POST "
                                        f"{engine.endpoint}", "wrong_task")
            body = await read_json(request)
            key, item = engine.parse(body)
            size = len(json.dumps(item, ensure_ascii=False))
            result = await state["batcher"].submit(key, item, size)
        except RequestError as exc:
            engine_errors = state["batcher"].stats.errors
            engine_errors[exc.status] = engine_errors.get(exc.status, 0) + 1
            return _error(exc.status, exc.message, exc.kind)
        state["batcher"].stats.served += 1
        return JSONResponse(engine.response(result))

    def route(kind: str):
        async def endpoint(request: Request):
            return await answer(kind, request)

        return endpoint

    for kind, path in endpoints().items():  # every endpoint: another task's answers 400 wrong_task
        app.add_api_route(path, route(kind), methods=["POST"], name=kind)

    @app.get("/health")
    async def health():
        batcher = state["batcher"]
        body = {"status": "draining" if state["draining"] else "ok", "model": engine.name, "task": engine.kind,
                "queued": batcher.queue.qsize() if batcher else 0, "in_flight": batcher.in_flight if batcher else 0,
                "served": batcher.stats.served if batcher else 0,
                "batches": batcher.stats.batches if batcher else 0,
                "largest_batch": batcher.stats.largest_batch if batcher else 0}
        return JSONResponse(body, status_code=503 if state["draining"] else 200)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": engine.name, "object": "model", "created": engine.created, "owned_by": "llmctl",
            "task": engine.kind, "endpoint": engine.endpoint, "metrics": engine.metrics,
            "path": str(engine.path)}]}

    return app


# ------------------------------------------------------------------------------------------------------ server


def run_server(engine: Engine, limits: Limits, host: str, port: int, say=print) -> None:
    """Serve until SIGTERM or SIGINT: then refuse new requests, finish the ones in flight and return (uvicorn
    raises the signal again once it has shut down, so the process ends with it)."""
    import socket

    import uvicorn

    app = build_app(engine, limits)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.serve["draining"] = True  # requests that still arrive on open connections get a 503
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(limits.timeout) + 5)
    server = Server(config)
    app.state.serve["on_stop"] = lambda stats: say(f"serve: stopped; {_count(stats.served, 'request')} answered "
                                                   f"in {_count(stats.batches, 'batch')}")
    say(f"serve: {engine.name} ({engine.kind}) on http://{host}:{bound}  POST {engine.endpoint}, "
        f"GET /health, GET /v1/models")
    server.run(sockets=[sock])


def serve(
    model: Annotated[str, typer.Argument(help="A finished run directory (its final/ is served), a model "
                                              "directory, or an int8 folder from `llmctl compress`.",
                                         show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Requests answered by one model call at most.")] = 16,
    max_wait_ms: Annotated[float, typer.Option(min=0.0, help="How long a batch waits for more requests once "
                                                           "its first has arrived.")] = 10.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Requests waiting at most; more get 503.")] = 256,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body; larger gets 413.")] = 1_000_000,
    max_input_tokens: Annotated[Optional[int], typer.Option(
        min=1, help="Input tokens per text \\[default: what the model reads].", show_default=False)] = None,
    long_input: Annotated[Literal["truncate", "reject"], typer.Option(
        help="An input over --max-input-tokens: cut to fit, or answer 413.")] = "truncate",
    max_new_tokens_cap: Annotated[int, typer.Option(min=1, help="Largest max_new_tokens (max_tokens) a request "
                                                                "may ask for; more gets 400.")] = 512,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a request may wait for its answer; then "
                                                         "504.")] = 60.0,
):
    """Serve a model over HTTP: task endpoints, dynamic batching, limits with JSON errors.

    Endpoints: POST /v1/summarize, /v1/translate, /v1/classify, /v1/qa (the one of the model's task) or
    /v1/completions (OpenAI-compatible, causal LMs); GET /health; GET /v1/models. SIGTERM finishes the requests
    in flight and exits. [bold]Examples:[/]

        llmctl serve runs/summarization
        llmctl serve deploy/summarizer --host 0.0.0.0 --port 8080 --max-batch-size 32
        curl -s localhost:8000/v1/summarize -H 'content-type: application/json' -d '{"text": "..."}'
    """
    limits = Limits(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                    max_body_bytes=max_body_bytes, max_input_tokens=max_input_tokens, long_input=long_input,
                    max_new_tokens_cap=max_new_tokens_cap, timeout=timeout)
    engine = Engine(model, limits)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    run_server(engine, limits, host, port, say=say)


def _count(n: int, noun: str) -> str:
    """"1 request", "2 requests", "1 batch", "3 batches"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith(('s', 'sh', 'ch', 'x')) else 's'}"

