"""The OpenAI request bodies reverie accepts; unknown fields are ignored, as OpenAI clients send many.

Honoured: messages (roles system, developer, user, assistant; content a string or text parts), prompt (a string
or a list of strings), max_tokens / max_completion_tokens, temperature, top_p, n, stop, stream,
stream_options.include_usage, and user (which keeps a user on one canary arm). Everything else (tools, logprobs,
seed, penalties, …) is accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from reverie.data.knowledge import QA
from reverie.data.text import UnicodeText

MAX_CHOICES = 8  # n, and prompts in one completion request: each is a generation the queue must hold


class TextPart(BaseModel):
    """One part of a message's content (`{"type": "text", "text": …}`); other types are named and refused."""

    type: UnicodeText
    text: UnicodeText = ""


def _joined(content: str | list[TextPart]) -> str:
    """Text parts are joined with newlines; an image or audio part is refused rather than silently unseen."""
    if isinstance(content, str):
        return content
    if other := sorted({part.type for part in content if part.type != "text"}):
        raise ValueError(f"content part type {', '.join(map(repr, other))} is not supported: send text parts only")
    return "\n".join(part.text for part in content)


def _no_tools(role: str) -> str:
    if role == "tool":
        raise ValueError("role 'tool' is not supported: this server does no tool calling")
    return role


class Message(BaseModel):
    role: Annotated[Literal["system", "developer", "user", "assistant", "tool"], AfterValidator(_no_tools)]
    content: Annotated[UnicodeText | list[TextPart], AfterValidator(_joined)]  # a string once validated


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with the usage and no choices")


class Sampled(BaseModel):
    """What the two generating endpoints share."""

    model: UnicodeText = Field("reverie", description="'reverie' or the served model's id, as /v1/models lists them")
    max_tokens: int | None = Field(
        None, ge=1, description="Cut to serve.max_tokens; unset, as many as that and the context allow")
    temperature: float = Field(0.0, ge=0, le=2, allow_inf_nan=False,
                               description="0 (or below engines.generation.GREEDY_BELOW) is greedy")
    top_p: float = Field(1.0, ge=0, le=1, allow_inf_nan=False, description="Nucleus sampling; 0 is greedy")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Choices per prompt; a stream has one")
    stop: UnicodeText | Annotated[list[UnicodeText], Field(max_length=4)] | None = Field(
        None, description="Up to 4 sequences; the answer ends before the first one it generates (empty ones: none)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: UnicodeText | None = Field(None, description="The end user, as OpenAI names it: the "
                                     "same user always gets the same arm while a canary serves (serve.canary)")

    def stops(self) -> tuple[str, ...]:
        sequences = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(sequence for sequence in sequences if sequence)

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatRequest(Sampled):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    retrieval: bool = Field(True, description="reverie extension: false answers closed-book, without memory")


class CompletionRequest(Sampled):
    prompt: UnicodeText | Annotated[list[UnicodeText], Field(min_length=1, max_length=MAX_CHOICES)] = Field(
        description="A string, or several (each answered with n choices); one with no tokens is refused (400)")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class FeedbackRequest(BaseModel):
    id: UnicodeText | None = Field(None, description="The id of a completion this server returned")
    prompt: UnicodeText | None = None  # needed when the id is unknown (e.g. after a restart)
    answer: UnicodeText | None = None
    rating: Literal["up", "down"]
    correction: UnicodeText | None = Field(None, min_length=1, description="What the answer should have been")


class MemoryRequest(BaseModel):
    title: UnicodeText = Field(min_length=1, max_length=300)
    text: UnicodeText = Field(min_length=1)
    questions: list[QA] = Field(default_factory=list, description="[{question, answer}] for recall")
    train_questions: list[QA] = Field(
        default_factory=list, description="[{question, answer}] Learn trains on (other wording than the checks)")
