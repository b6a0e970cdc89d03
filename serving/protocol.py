"""Wire models: the Cohere-shaped rerank request/response and the admin payloads. One place only."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # callers may attach metadata; it is echoed back
    id: str | None = None
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. Cohere's "model" or "max_tokens_per_doc"
    query: str = Field(description="The search query; must not be empty.")
    documents: list[str | DocumentIn] = Field(description="Passages to rerank: strings or {id?, text}.")
    top_n: int | None = Field(None, ge=1, description="Return only the best N results.")
    return_documents: bool = False
    domain: str | None = None
    user_id: str | None = Field(None, description="Sticky A/B key; else X-User-Id / X-Session-Id headers.")

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be empty")
        return v

    @field_validator("documents")
    @classmethod
    def _documents_not_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("documents must not be empty")
        return v


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    domain: str
    variant: Literal["domain", "base"]
    meta: dict[str, Any] = {}


class DomainConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown key is an error, not silently ignored
    ab_split: float | None = Field(None, ge=0.0, le=1.0, description="Share of traffic for the domain model.")


class PromoteRequest(BaseModel):
    version: str


class ErrorBody(BaseModel):
    error: str
    detail: list[dict[str, Any]] = []
