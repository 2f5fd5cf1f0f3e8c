"""The FastAPI application: OpenAI-compatible /v1/models, /v1/chat/completions and /v1/completions (streaming
included) on the current release, with hot switch, bounded requests and an API key."""

from __future__ import annotations

import asyncio
from functools import partial
import json
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reverie.errors import ReverieError
from reverie.reporting.charts import pareto_png, trends_png
from reverie.reporting.overview import overview
from reverie.reporting.page import dashboard_html
from reverie.serving.batcher import Admission, Batcher, Overloaded
from reverie.data.feedback import Feedback, append_feedback
from reverie.serving.schema import ChatRequest, CompletionRequest, FeedbackRequest, MemoryRequest
from reverie.serving.slot import ModelSlot, Served
from reverie.serving.streaming import stream_text
from reverie.workspace import Workspace

if TYPE_CHECKING:  # faiss and sentence-transformers load only when memory is on
    from reverie.memory.retrieval import ShortTermMemory

LOOPBACK = ("127.0.0.1", "localhost", "::1")
RECENT_ANSWERS = 1000  # answers kept in memory so feedback can name them by id
NOTES_PROMPT = ("Notes from memory:\n{notes}\n\nAnswer using the notes when they help, and cite the number of "
                "the note you used, like [1].")


def create_app(workspace: Workspace, served: Served, memory: ShortTermMemory | None,
               api_key: str | None = None) -> FastAPI:
    """The server for one workspace: it starts on `served` (loaded by the caller, so a model that cannot load is
    a clear error rather than a failed startup) and follows the release pointer."""
    settings = workspace.config.serve
    state: dict = {}
    recent: OrderedDict[str, tuple[str, str, str]] = OrderedDict()  # id -> (model, prompt, answer)

    def remember(ident: str, model_id: str, prompt: str, answer: str) -> None:
        recent[ident] = (model_id, prompt, answer)
        while len(recent) > RECENT_ANSWERS:
            recent.popitem(last=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        slot = ModelSlot(workspace, served)
        batcher = Batcher(slot, settings.batch_size, settings.batch_wait_ms)
        state.update(slot=slot, batcher=batcher, admission=Admission(settings.max_queue), memory=memory)
        tasks = [asyncio.create_task(slot.watch(settings.poll_seconds)), asyncio.create_task(batcher.run())]
        yield
        for task in tasks:
            task.cancel()

    # No /docs, /redoc or /openapi.json: they would be pages outside the API key.
    app = FastAPI(title="reverie", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def authorized(request: Request, authorization: str | None = Header(None), key: str | None = None) -> None:
        """Bearer header; ?key= only on GET, where a browser cannot send one (the page and its charts)."""
        if api_key is None:
            return
        given = key if key is not None and request.method == "GET" else (authorization or "")
        given = given.removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send Authorization: Bearer <key>")

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own and the router's (404, 405)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, f"invalid request: {problems}", "invalid_request_error")

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "send a Content-Length header", "invalid_request_error")
            if int(length) > settings.max_request_bytes:
                return _error(413, f"request body of {length} bytes is over serve.max_request_bytes "
                              f"({settings.max_request_bytes})", "invalid_request_error")
        return await call_next(request)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return _error(503, f"server busy: {exc}; retry shortly", "overloaded", {"Retry-After": "1"})

    @app.get("/health")
    async def health() -> dict:
        slot = state.get("slot")
        return {"status": "ok" if slot else "loading", "model": slot.served.model_id if slot else None}

    @app.get("/", dependencies=[Depends(authorized)], response_class=HTMLResponse)
    async def dashboard() -> str:
        return dashboard_html()

    @app.get("/api/overview", dependencies=[Depends(authorized)])
    async def api_overview() -> dict:
        return overview(workspace)

    @app.get("/charts/trends.png", dependencies=[Depends(authorized)])
    async def trends_chart() -> Response:
        return Response(trends_png(overview(workspace)), media_type="image/png")

    @app.get("/charts/pareto.png", dependencies=[Depends(authorized)])
    async def pareto_chart() -> Response:
        return Response(pareto_png(overview(workspace)), media_type="image/png")

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict:
        served = state["slot"].served
        return {"object": "list", "data": [
            {"id": "reverie", "object": "model", "owned_by": "reverie", "root": served.model_id},
            {"id": served.model_id, "object": "model", "owned_by": "reverie"},
        ]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(body: ChatRequest):
        tokenizer = state["slot"].served.loaded.tokenizer
        if not tokenizer.chat_template:
            raise HTTPException(400, "the served model has no chat template: use /v1/completions")
        messages = [m.model_dump() for m in body.messages]
        asked = next((m.content for m in reversed(body.messages) if m.role == "user"), body.messages[-1].content)
        hits = state["memory"].search(asked, settings.retrieval_k) if state["memory"] and body.retrieval else []
        if hits:
            notes = "\n".join(f"[{n}] {hit.title}: {hit.text}" for n, hit in enumerate(hits, start=1))
            messages = [{"role": "system", "content": NOTES_PROMPT.format(notes=notes)}] + messages
        prompt_ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"])
        citations = [{"index": n, "document_id": hit.document_id, "title": hit.title, "score": round(hit.score, 3)}
                     for n, hit in enumerate(hits, start=1)]
        return await _answer(prompt_ids, asked, body.max_tokens, body.temperature, body.stream, chat=True,
                             citations=citations)

    @app.post("/v1/memory", dependencies=[Depends(authorized)])
    async def add_memory(body: MemoryRequest) -> dict:
        """Short-term memory: indexed at once (after hygiene), consolidated into the weights at night."""
        if state["memory"] is None:
            raise HTTPException(409, "short-term memory is off (serve.retrieval: false)")
        try:
            document = state["memory"].add(body.title, body.text, [q.model_dump() for q in body.questions], "api",
                                           [q.model_dump() for q in body.train_questions])
        except ReverieError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"id": document.id, "title": document.title}

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest):
        tokenizer = state["slot"].served.loaded.tokenizer
        prompt_ids = tokenizer(body.prompt)["input_ids"]
        return await _answer(prompt_ids, body.prompt, body.max_tokens, body.temperature, body.stream, chat=False)

    @app.post("/v1/feedback", dependencies=[Depends(authorized)])
    async def feedback(body: FeedbackRequest) -> dict:
        """Thumbs up/down and corrections; a thumbs-down with a correction becomes a hard example next Learn."""
        if body.id in recent:
            model_id, prompt, answer = recent[body.id]
        elif body.prompt and body.answer is not None:
            model_id, prompt, answer = state["slot"].served.model_id, body.prompt, body.answer
        else:
            raise HTTPException(400, f"unknown id {body.id!r}: send prompt and answer with the rating")
        row = Feedback(id=uuid.uuid4().hex[:16], at=time.time(), model_id=model_id, prompt=prompt, answer=answer,
                       rating=body.rating, correction=body.correction)
        append_feedback(workspace, row)
        return {"id": row.id, "stored": True}

    async def _answer(prompt_ids: list[int], asked: str, max_tokens: int | None, temperature: float, stream: bool,
                      chat: bool, citations: list[dict] | None = None):
        max_tokens = min(max_tokens or settings.max_tokens, settings.max_tokens)
        admission: Admission = state["admission"]
        context = state["slot"].served.loaded.model.config.max_position_embeddings
        if len(prompt_ids) + max_tokens > context:
            raise HTTPException(400, f"prompt of {len(prompt_ids)} tokens + max_tokens {max_tokens} is over the "
                                f"model's context of {context} tokens")
        if stream:
            admission.acquire()  # released when generation ends, even if the client left before reading
            try:
                model_id, pieces, cancel = stream_text(state["slot"], prompt_ids, max_tokens, temperature,
                                                       on_end=admission.release)
            except BaseException:
                admission.release()
                raise
            ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
            done = partial(remember, ident, model_id, asked)
            return StreamingResponse(_events(ident, pieces, model_id, chat, cancel, done, citations or []),
                                     media_type="text/event-stream")
        with admission:
            output = await state["batcher"].submit(prompt_ids, max_tokens, temperature)
        created, ident = int(time.time()), f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        remember(ident, output.model_id, asked, output.text)
        choice = ({"index": 0, "message": {"role": "assistant", "content": output.text}} if chat
                  else {"index": 0, "text": output.text})
        usage = {"prompt_tokens": output.prompt_tokens, "completion_tokens": output.completion_tokens,
                 "total_tokens": output.prompt_tokens + output.completion_tokens}
        return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": output.model_id, "choices": [choice | {"finish_reason": output.finish_reason}],
                "usage": usage} | ({"citations": citations} if chat else {})

    return app


def _events(ident: str, pieces: Iterator[str], model_id: str, chat: bool, cancel: threading.Event,
            done: Callable[[str], None], citations: list[dict]) -> Iterator[str]:
    """OpenAI's server-sent events: one chunk per piece of text, a final chunk with finish_reason, [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
        choice = {"index": 0, "finish_reason": finish} | (
            {"delta": delta} if chat else {"text": delta.get("content", "")})
        body = {"id": ident, "object": kind, "created": int(time.time()), "model": model_id, "choices": [choice]}
        return f"data: {json.dumps(body | (extra or {}))}\n\n"

    try:
        if chat:
            yield chunk({"role": "assistant", "content": ""}, extra={"citations": citations})
        text = []
        for piece in pieces:
            if piece:
                text.append(piece)
                yield chunk({"content": piece})
        done("".join(text))
        yield chunk({}, "stop")
        yield "data: [DONE]\n\n"
    finally:  # the stream ended or the client left: stop generating either way
        cancel.set()


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def check_binding(host: str, api_key: str | None) -> None:
    """An API key is required whenever the server listens beyond loopback."""
    if host not in LOOPBACK and not api_key:
        raise ReverieError(f"--host {host} listens beyond loopback: set an API key (--api-key or REVERIE_API_KEY)")
