"""The OpenAI request bodies reverie accepts; unknown fields are ignored, as OpenAI clients send many."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from reverie.data.knowledge import QA


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str = "reverie"
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    stream: bool = False
    retrieval: bool = Field(True, description="reverie extension: false answers closed-book, without memory")


class CompletionRequest(BaseModel):
    model: str = "reverie"
    prompt: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    stream: bool = False


class FeedbackRequest(BaseModel):
    id: str | None = Field(None, description="The id of a completion this server returned")
    prompt: str | None = None  # needed when the id is unknown (e.g. after a restart)
    answer: str | None = None
    rating: Literal["up", "down"]
    correction: str | None = Field(None, min_length=1, description="What the answer should have been")


class MemoryRequest(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1)
    questions: list[QA] = Field(default_factory=list, description="[{question, answer}] for recall")
    train_questions: list[QA] = Field(
        default_factory=list, description="[{question, answer}] Learn trains on (other wording than the checks)")
