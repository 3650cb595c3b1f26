"""The two questions memory asks a model, and what is taken from the answers.

Extraction turns a transcript into candidate memories; reconciliation decides, for a candidate that has
near-duplicates, whether it is new (ADD), improves one of them (UPDATE) or says nothing new (NOOP). The
prompts are Kilnbase's own, for the purpose InsForge's serve.

A model's answer is untrusted text, not JSON mode: the first JSON object in it (a ```json fence allowed) is
read, and every field is checked. A candidate without a title or content is dropped, an unknown kind becomes
`fact`, over-long fields are cut to the stored limits, and at most `MAX_EXTRACTED` candidates are kept.
A reconciliation that cannot be read, or that names a memory not among those it was shown, is an ADD: what
the caller asked to remember is never lost to a garbled answer, and a made-up id never reaches the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from kilnbase.memory.definitions import MAX_CONTENT, MAX_TITLE, Kind, kind_of

#: The most memories one transcript yields (each costs an embedding, and maybe a reconciliation).
MAX_EXTRACTED = 50

Action = Literal["ADD", "UPDATE", "NOOP"]

EXTRACT_PROMPT = """You read the transcript of a task an AI agent worked on, and write down what is worth \
remembering for the agent's FUTURE tasks.

Answer with JSON only, in this form:
{"memories": [{"kind": "fact" | "decision" | "preference" | "reference", "title": "<one short line>", \
"content": "<one self-contained statement>"}]}

Keep only durable details that are not obvious from the code: where things are (endpoints, configuration, \
where a credential is kept), decisions together with why they were made, constraints, pitfalls, the \
user's preferences. Each memory holds one fact and reads on its own, without the others.
Leave out what was transient: commands that were run, errors that were fixed on the way, progress reports, \
anything a reader of the code finds anyway.
If nothing is worth remembering, answer {"memories": []}."""

RECONCILE_PROMPT = """You keep an AI agent's memory. You are given a NEW candidate memory and EXISTING \
memories that resemble it. Choose exactly one action:
- "NOOP": the candidate tells nothing that an existing memory does not already say (however worded).
- "UPDATE": the candidate corrects, replaces or adds detail to one existing memory; give that memory's id as \
target_id, and the merged title and content.
- "ADD": the candidate is new information.
Answer with JSON only: {"action": "ADD" | "UPDATE" | "NOOP", "target_id": "<id>", "title": "...", \
"content": "..."} (target_id, title and content only for UPDATE)."""

_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Candidate:
    kind: Kind
    title: str
    content: str


@dataclass(frozen=True)
class Decision:
    action: Action
    #: For UPDATE: the existing memory (one of those shown) and its merged text.
    target_id: str | None = None
    title: str | None = None
    content: str | None = None


def first_object(text: str) -> dict[str, Any] | None:
    """The JSON object a model's answer holds (inside a fence, or between its first `{` and last `}`)."""
    fenced = _FENCED.search(text)
    raw = fenced.group(1) if fenced else text
    start, end = raw.find("{"), raw.rfind("}")
    if start == -1 or end <= start:
        return None
    try:
        value = orjson.loads(raw[start : end + 1])
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any, limit: int) -> str:
    """A model's text, trimmed and bounded; without NUL, which Postgres's text cannot hold (a model may
    write `\\u0000` as any client may, and its answer is not checked on the way in as a request is)."""
    return value.replace("\x00", "").strip()[:limit].strip() if isinstance(value, str) else ""


def candidates(answer: str) -> list[Candidate]:
    """The well-formed memories of an extraction's answer (none when it cannot be read)."""
    parsed = first_object(answer)
    raw = parsed.get("memories") if parsed is not None else None
    found: list[Candidate] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        title, content = _text(item.get("title"), MAX_TITLE), _text(item.get("content"), MAX_CONTENT)
        if not title or not content:
            continue
        found.append(Candidate(kind_of(item.get("kind")), title, content))
        if len(found) == MAX_EXTRACTED:
            break
    return found


def decision(answer: str, shown_ids: frozenset[str]) -> Decision:
    """The reconciliation's choice; ADD when it cannot be read or its UPDATE names no memory shown."""
    parsed = first_object(answer) or {}
    action = parsed.get("action")
    if isinstance(action, str):
        action = action.strip().upper()
    if action == "NOOP":
        return Decision("NOOP")
    target = parsed.get("target_id")
    if action == "UPDATE" and isinstance(target, str) and target.strip().lower() in shown_ids:
        return Decision(
            "UPDATE",
            target.strip().lower(),
            _text(parsed.get("title"), MAX_TITLE) or None,
            _text(parsed.get("content"), MAX_CONTENT) or None,
        )
    return Decision("ADD")
