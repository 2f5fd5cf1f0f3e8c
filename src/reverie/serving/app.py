"""The FastAPI application: OpenAI-compatible /v1/models, /v1/chat/completions and /v1/completions (streaming
included) on the current release, with hot switch, bounded requests and an API key; a canary beside the release
and the live alarm (serving/canary.py), their figures at /v1/canary."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, AsyncIterator

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import HTMLResponse, Response

from reverie.data.feedback import Feedback, append_feedback
from reverie.errors import ReverieError
from reverie.reporting.charts import pareto_png, trends_png
from reverie.reporting.overview import overview
from reverie.reporting.page import dashboard_html
from reverie.serving.batcher import Admission, Batcher
from reverie.serving.canary import LiveControl, route_key
from reverie.serving.continuous import ContinuousScheduler, Scheduling
from reverie.serving.decoding import Sampling
from reverie.serving.errors import OPENAI_TAG, ApiError, error_response, install_error_handlers
from reverie.serving.schema import ChatRequest, CompletionRequest, FeedbackRequest, MemoryRequest, Sampled
from reverie.serving.slot import ModelSlot, Served
from reverie.serving.streaming import CancellingStream, events, stream_text
from reverie.workspace import Workspace

if TYPE_CHECKING:  # faiss and sentence-transformers load only when memory is on
    from reverie.memory.retrieval import ShortTermMemory

LOOPBACK = ("127.0.0.1", "localhost", "::1")
RECENT_ANSWERS = 1000  # answers kept in memory so feedback can name them by id
NOTES_PROMPT = ("Notes from memory:\n{notes}\n\nAnswer using the notes when they help, and cite the number of "
                "the note you used, like [1].")


ARM_HEADER = "X-Reverie-Arm"  # on every answer: release or canary
SESSION_HEADER = "X-Session-Id"  # what keeps a session on one canary arm (serve.canary.sticky)


def create_app(workspace: Workspace, served: Served, memory: ShortTermMemory | None,
               api_key: str | None = None, canary: Served | None = None) -> FastAPI:
    """The server for one workspace: it starts on `served` (and `canary` beside it; both loaded by the caller, so
    a model that cannot load is a clear error rather than a failed startup) and follows the release pointer."""
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
        scheduling = Scheduling(settings.scheduling, settings.batch_size)
        scheduling.continuous(served)  # says at startup how the first model is scheduled
        continuous = ContinuousScheduler(slot, settings.batch_size)
        # its own registry connection, opened on the loop's thread, where every decision is taken (SQLite keeps a
        # connection to its thread; an in-process test client runs the loop on a thread of its own)
        live = LiveControl(Workspace.open(workspace.root, workspace.overrides, validate=True), slot, canary)
        state.update(slot=slot, batcher=batcher, scheduling=scheduling, continuous=continuous,
                     admission=Admission(settings.max_queue), memory=memory, live=live,
                     loop=asyncio.get_running_loop())
        tasks = [asyncio.create_task(slot.watch(settings.poll_seconds)), asyncio.create_task(batcher.run()),
                 asyncio.create_task(save_live_counts(live, settings.poll_seconds))]
        yield
        for task in tasks:
            task.cancel()
        continuous.close()
        live.save()

    # No /docs, /redoc or /openapi.json: they would be pages outside the API key.
    app = FastAPI(title="reverie", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    def check_key(given: str) -> None:
        if api_key is not None and not secrets.compare_digest(given.removeprefix("Bearer ").strip().encode(),
                                                              api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>",
                           code="invalid_api_key", kind="authentication_error")

    def bearer(authorization: str | None = Header(None)) -> None:
        """The API takes the key in the Authorization header only: a key in a URL ends up in logs."""
        check_key(authorization or "")

    def bearer_or_query(authorization: str | None = Header(None), key: str | None = None) -> None:
        """The page and its charts also take ?key=, since a browser's <img> cannot send a header."""
        check_key(key if key is not None else authorization or "")

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return error_response(411, "send a Content-Length header")
            if int(length) > settings.max_request_bytes:
                return error_response(413, f"request body of {length} bytes is over serve.max_request_bytes "
                                      f"({settings.max_request_bytes})")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        slot = state.get("slot")
        return {"status": "ok" if slot else "loading", "model": slot.served.model_id if slot else None}

    @app.get("/", dependencies=[Depends(bearer_or_query)], response_class=HTMLResponse)
    async def dashboard() -> str:
        return dashboard_html()

    @app.get("/api/overview", dependencies=[Depends(bearer_or_query)])
    async def api_overview() -> dict:
        return overview(workspace)

    @app.get("/charts/trends.png", dependencies=[Depends(bearer_or_query)])
    async def trends_chart() -> Response:
        return Response(trends_png(overview(workspace)), media_type="image/png")

    @app.get("/charts/pareto.png", dependencies=[Depends(bearer_or_query)])
    async def pareto_chart() -> Response:
        return Response(pareto_png(overview(workspace)), media_type="image/png")

    @app.get("/v1/models", dependencies=[Depends(bearer)])
    async def models() -> dict:
        slot = state["slot"]
        served = [slot.served] + ([slot.canary] if slot.canary else [])
        listed = [{"id": "reverie", "object": "model", "created": slot.served.created, "owned_by": "reverie",
                   "root": slot.served.model_id}]
        return {"object": "list", "data": listed + [{"id": s.model_id, "object": "model", "created": s.created,
                                                     "owned_by": "reverie"} for s in served]}

    @app.get("/v1/canary", dependencies=[Depends(bearer)])
    async def canary_figures() -> dict:
        """The canary's arm beside the release's, the new release's beside the one it replaced, the decisions."""
        return state["live"].report()

    def serving(model: str, user: str | None, request: Request) -> tuple[Served, str]:
        """The model and arm for a request: 'reverie' is routed (sticky, serve.canary); a served model's id pins
        it; another name is refused, as OpenAI refuses a model it does not have."""
        agent = request.headers.get("user-agent", "")
        client = hashlib.sha256(f"{request.client.host if request.client else ''}|{agent}".encode()).hexdigest()
        key = route_key(settings.canary.sticky, user, request.headers.get(SESSION_HEADER), client)
        served, arm = state["live"].route(model, key)
        if served is None:
            names = ", ".join(state["live"].model_ids())
            raise ApiError(404, f"the model {model!r} does not exist: this server serves 'reverie' ({names}), see "
                           "/v1/models", param="model", code="model_not_found")
        return served, arm

    @app.post("/v1/chat/completions", dependencies=[Depends(bearer)], tags=[OPENAI_TAG])
    async def chat(body: ChatRequest, request: Request, response: Response):
        served, arm = serving(body.model, body.user, request)  # checked, tokenized and generated on this model
        tokenizer = served.loaded.tokenizer
        if not tokenizer.chat_template:
            raise ApiError(400, "the served model has no chat template: use /v1/completions")
        # The developer role is OpenAI's newer name for system, which chat templates know.
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in body.messages]
        asked = next((m.content for m in reversed(body.messages) if m.role == "user"), body.messages[-1].content)
        hits = state["memory"].search(asked, settings.retrieval_k) if state["memory"] and body.retrieval else []
        if hits:
            notes = "\n".join(f"[{n}] {hit.title}: {hit.text}" for n, hit in enumerate(hits, start=1))
            messages = [{"role": "system", "content": NOTES_PROMPT.format(notes=notes)}] + messages
        prompt_ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"])
        citations = [{"index": n, "document_id": hit.document_id, "title": hit.title, "score": round(hit.score, 3)}
                     for n, hit in enumerate(hits, start=1)]
        return await _answer(request, response, served, arm, [prompt_ids], asked, body,
                             body.max_completion_tokens or body.max_tokens, chat=True, citations=citations)

    @app.post("/v1/memory", dependencies=[Depends(bearer)])
    async def add_memory(body: MemoryRequest) -> dict:
        """Short-term memory: indexed at once (after hygiene), consolidated into the weights at night."""
        if state["memory"] is None:
            raise ApiError(409, "short-term memory is off (serve.retrieval: false)")
        try:
            document = state["memory"].add(body.title, body.text, [q.model_dump() for q in body.questions], "api",
                                           [q.model_dump() for q in body.train_questions])
        except ReverieError as exc:
            raise ApiError(422, str(exc)) from None
        return {"id": document.id, "title": document.title}

    @app.post("/v1/completions", dependencies=[Depends(bearer)], tags=[OPENAI_TAG])
    async def completions(body: CompletionRequest, request: Request, response: Response):
        served, arm = serving(body.model, body.user, request)
        texts = body.prompts()
        prompts = [served.loaded.tokenizer(text)["input_ids"] for text in texts]
        if empty := [n for n, ids in enumerate(prompts) if not ids]:
            which = "the prompt" if isinstance(body.prompt, str) else f"prompt {empty[0]}"
            raise ApiError(400, f"{which} is empty: there is nothing to continue", param="prompt")
        return await _answer(request, response, served, arm, prompts, texts[0], body, body.max_tokens, chat=False)

    @app.post("/v1/feedback", dependencies=[Depends(bearer)])
    async def feedback(body: FeedbackRequest) -> dict:
        """Thumbs up/down and corrections; a thumbs-down with a correction becomes a hard example next Learn."""
        if body.id in recent:
            model_id, prompt, answer = recent[body.id]
        elif body.prompt and body.answer is not None:
            model_id, prompt, answer = state["slot"].served.model_id, body.prompt, body.answer
        else:
            raise ApiError(400, f"unknown id {body.id!r}: send prompt and answer with the rating", param="id")
        row = Feedback(id=uuid.uuid4().hex[:16], at=time.time(), model_id=model_id, prompt=prompt, answer=answer,
                       rating=body.rating, correction=body.correction)
        append_feedback(workspace, row)
        if body.rating == "down":
            state["live"].rated_down(model_id)
        return {"id": row.id, "stored": True}

    def budget(served: Served, prompt_tokens: int, asked: int | None) -> int:
        """New tokens for one prompt: what was asked, cut to serve.max_tokens; unasked, what the context leaves."""
        context = served.loaded.model.config.max_position_embeddings
        room = context - prompt_tokens
        if room < 1:
            raise ApiError(400, f"prompt of {prompt_tokens} tokens fills the model's context of {context} tokens",
                           code="context_length_exceeded")
        if asked is None:
            return min(settings.max_tokens, room)
        tokens = min(asked, settings.max_tokens)
        if tokens > room:
            raise ApiError(400, f"prompt of {prompt_tokens} tokens + max_tokens {tokens} is over the model's "
                           f"context of {context} tokens", param="max_tokens", code="context_length_exceeded")
        return tokens

    async def _answer(request: Request, response: Response, served: Served, arm: str, prompts: list[list[int]],
                      asked: str, body: Sampled, max_tokens: int | None, chat: bool,
                      citations: list[dict] | None = None):
        """Every check first, so that a stream and a plain answer refuse the same requests with the same status;
        then n choices per prompt, batched (or decoded continuously, serve.scheduling), or one streamed. What the
        generation came to (answer, latency, or failure) is counted for its model (serving/canary.py)."""
        started = time.perf_counter()
        live: LiveControl = state["live"]
        budgets = [budget(served, len(ids), max_tokens) for ids in prompts]
        wanted = len(prompts) * body.n
        if body.stream and wanted > 1:
            raise ApiError(400, f"a stream carries one choice; this request asks for {wanted} (n and prompts)",
                           param="n" if body.n > 1 else "prompt")
        if wanted > settings.max_queue:
            raise ApiError(400, f"{wanted} choices at once is over serve.max_queue ({settings.max_queue})",
                           param="n")
        sampling = Sampling.of(body.temperature, body.top_p, body.stops())
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        admission: Admission = state["admission"]
        continuous: bool = state["scheduling"].continuous(served)
        if body.stream:
            admission.acquire()  # released when generation ends, even if the client left before reading
            try:
                start = state["continuous"].stream if continuous else partial(stream_text, state["slot"])
                stream = start(served, prompts[0], budgets[0], sampling, on_end=admission.release)
            except BaseException:
                admission.release()
                raise
            try:  # a generation that fails before its first token is answered as the plain request would be
                await asyncio.shield(asyncio.wrap_future(stream.started))
            except asyncio.CancelledError:
                stream.cancel.set()
                raise
            except BaseException:
                stream.cancel.set()
                live.failed(served.model_id)
                raise
            first = {"citations": citations} if chat else {}
            loop: asyncio.AbstractEventLoop = state["loop"]

            def streamed(text: str) -> None:  # on the stream's thread: counted on the loop's
                remember(ident, stream.model_id, asked, text)
                loop.call_soon_threadsafe(live.answered, served.model_id, time.perf_counter() - started, text)

            answer_stream = CancellingStream(events(ident, stream, chat, len(prompts[0]), body.include_usage(), first,
                                                    streamed, lambda: loop.call_soon_threadsafe(live.failed,
                                                                                                served.model_id)),
                                             stream.cancel)
            answer_stream.headers[ARM_HEADER] = arm
            return answer_stream
        runs = 1 if sampling.greedy else body.n  # greedy choices are identical: generated once, repeated
        submit = (state["continuous"] if continuous else state["batcher"]).submit
        with admission.hold(wanted):
            # Every job ends before the places are given back, even when one fails.
            generating = asyncio.gather(*(submit(served, ids, tokens, sampling)
                                          for ids, tokens in zip(prompts, budgets) for _ in range(runs)),
                                        return_exceptions=True)
            outputs = await (unless_client_leaves(request, generating) if continuous else generating)
        if failed := next((output for output in outputs if isinstance(output, BaseException)), None):
            if not isinstance(failed, asyncio.CancelledError):
                live.failed(served.model_id)
            raise failed
        answers = [answer for answer in outputs for _ in range(body.n // runs)]
        remember(ident, served.model_id, asked, answers[0].text)  # feedback by id rates the first choice
        live.answered(served.model_id, time.perf_counter() - started, answers[0].text)
        response.headers[ARM_HEADER] = arm
        choices = [({"index": n, "message": {"role": "assistant", "content": a.text}} if chat
                    else {"index": n, "text": a.text}) | {"finish_reason": a.finish_reason}
                   for n, a in enumerate(answers)]
        prompt_tokens, completion_tokens = sum(map(len, prompts)), sum(a.completion_tokens for a in answers)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": served.model_id, "choices": choices, "usage": usage} | (
            {"citations": citations} if chat else {})

    return app


async def save_live_counts(live: LiveControl, every: float) -> None:
    """The live counts into the registry every `every` seconds, so the next server (and the alarm) sees them."""
    while True:
        await asyncio.sleep(every)
        live.save()


async def unless_client_leaves(request: Request, work: asyncio.Future) -> list:
    """The result of `work`, unless the client disconnects first: then `work` is cancelled (a continuous batch
    takes its rows out at the next step) and the request ends with 499, which nobody reads."""
    async def disconnected() -> None:  # the body has been read: what comes next is the disconnect
        while (await request.receive())["type"] != "http.disconnect":
            pass

    left = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
    if not work.done():
        work.cancel()
        work.add_done_callback(lambda done: done.cancelled() or done.exception())  # its CancelledError, seen
        raise ApiError(499, "the client closed the request before its answer", code="client_closed_request")
    return work.result()


def check_binding(host: str, api_key: str | None) -> None:
    """An API key is required whenever the server listens beyond loopback."""
    if host not in LOOPBACK and not api_key:
        raise ReverieError(f"--host {host} listens beyond loopback: set an API key (--api-key or REVERIE_API_KEY)")
