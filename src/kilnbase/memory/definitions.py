"""What `/api/memory` takes: InsForge's request fields and limits (`shared-schemas/memory-api.schema.ts`),
checked strictly, so a mistake is a 400 naming the field before any model is called.

A scope is a free namespace the caller names (a project, an agent, an end user: `"default"` unless given), as
in InsForge; memories of one scope never meet another's. Kilnbase bounds what InsForge leaves open: a scope
is at most 255 characters, a source 500; and it refuses a field it does not know rather than ignoring it
(a misspelt `treshold` would otherwise recall with the default without a word)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

Kind = Literal["fact", "decision", "preference", "reference"]
_KINDS: dict[str, Kind] = {
    "fact": "fact",
    "decision": "decision",
    "preference": "preference",
    "reference": "reference",
}

MAX_SCOPE = 255
MAX_SOURCE = 500
MAX_TITLE = 2_000
MAX_CONTENT = 20_000
#: A transcript is capped to bound what one extraction costs (InsForge's cap).
MAX_TRANSCRIPT = 50_000
MAX_QUERY = 4_000
DEFAULT_RECALL_LIMIT = 5
MAX_RECALL_LIMIT = 50
#: Recall's cosine similarity floor unless the caller gives one (InsForge's, tuned for
#: text-embedding-3-small).
DEFAULT_RECALL_THRESHOLD = 0.45


def kind_of(value: object) -> Kind:
    """A model's kind when it is one, else `fact` (InsForge's default)."""
    return _KINDS.get(value, "fact") if isinstance(value, str) else "fact"


Scope = Annotated[str, Field(min_length=1, max_length=MAX_SCOPE)]


class RememberRequest(BaseModel):
    """`{title, content}` stores one memory; `{transcript}` has a model extract many (it wins when both
    are given, as in InsForge)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    scope: Scope = "default"
    source: Annotated[str, Field(max_length=MAX_SOURCE)] | None = None
    kind: Kind | None = None
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE)] | None = None
    content: Annotated[str, Field(min_length=1, max_length=MAX_CONTENT)] | None = None
    transcript: Annotated[str, Field(min_length=1, max_length=MAX_TRANSCRIPT)] | None = None

    @model_validator(mode="after")
    def one_form(self) -> Self:
        if not self.transcript and not (self.title and self.content):
            raise PydanticCustomError("one_form", "Provide either { transcript } or { title, content }")
        return self


class RecallRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    scope: Scope = "default"
    #: Embedded, so bounded: an unbounded query would burn embedding tokens.
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY)]
    limit: Annotated[int, Field(ge=1, le=MAX_RECALL_LIMIT)] = DEFAULT_RECALL_LIMIT
    threshold: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None


class IndexRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    scope: Scope = "default"
