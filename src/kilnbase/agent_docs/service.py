"""The documents behind `/api/docs` (InsForge's docs API, which `@insforge/mcp`'s `fetch-docs` and
`fetch-sdk-docs` read): written for Kilnbase and true to what this server does.

A document for a capability this server does not have (site deployments) says so plainly instead
of documenting calls that fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal, get_args

from kilnbase.http.errors import ApiError

#: InsForge's doc types, in its order (the MCP tools' parameter type too).
DocType = Literal[
    "instructions",
    "db-sdk",
    "auth-sdk",
    "storage-sdk",
    "functions-sdk",
    "ai-integration-sdk",
    "real-time",
    "deployment",
    "payments",
]
DOC_TYPES: tuple[str, ...] = get_args(DocType)
Feature = Literal["db", "storage", "functions", "auth", "ai", "realtime", "payments"]
FEATURES: tuple[str, ...] = get_args(Feature)
Language = Literal["typescript", "rest-api", "python", "swift", "kotlin"]
LANGUAGES: tuple[str, ...] = get_args(Language)
#: The languages documented for Kilnbase (Swift and Kotlin: not written; the REST API serves them).
WrittenLanguage = Literal["typescript", "rest-api", "python"]
WRITTEN_LANGUAGES: tuple[str, ...] = get_args(WrittenLanguage)
#: Doc type → (feature, language) of the document it is.
_DOC_TYPE_DOCUMENT = {
    "db-sdk": ("db", "typescript"),
    "auth-sdk": ("auth", "typescript"),
    "storage-sdk": ("storage", "typescript"),
    "functions-sdk": ("functions", "typescript"),
    "ai-integration-sdk": ("ai", "typescript"),
    "real-time": ("realtime", "typescript"),
    "deployment": ("deployment", "typescript"),
    "payments": ("payments", "typescript"),
}
#: Features documented here; the others are absent from this server.
_WRITTEN_FEATURES = ("db", "auth", "ai", "storage", "functions", "realtime", "payments")
_TITLES = {
    "deployment": "Site deployments",
}


@dataclass(frozen=True)
class Document:
    type: str
    content: str

    def json(self) -> dict[str, str]:
        return {"type": self.type, "content": self.content}


def _read(name: str) -> str:
    return (
        resources.files("kilnbase.agent_docs").joinpath("content", f"{name}.md").read_text(encoding="utf-8")
    )


def _not_here(feature: str) -> str:
    return (
        f"# {_TITLES[feature]}: not available in this server\n\n"
        f"This Kilnbase server has no {feature} API yet: calls to it answer 404 "
        f"(`this Kilnbase server has no {feature} API`), and the official SDK's {feature} methods fail. "
        "Do not write code that depends on it. Use what exists instead (database, auth, storage, edge "
        "functions, realtime, AI gateway: `fetch-docs instructions`).\n"
    )


def _not_written(feature: str, language: str) -> ApiError:
    return ApiError(
        404,
        "DOCS_NOT_FOUND",
        "Documentation not found",
        f"Kilnbase documents {feature} in {', '.join(WRITTEN_LANGUAGES)}; the REST API works from {language} "
        f"(GET /api/docs/{feature}/rest-api).",
    )


class AgentDocs:
    def index(self) -> list[dict[str, str]]:
        """Every document, as InsForge lists them: `{type, filename, endpoint}`."""
        listed = [{"type": doc, "filename": f"{doc}.md", "endpoint": f"/api/docs/{doc}"} for doc in DOC_TYPES]
        for feature in FEATURES:
            for language in WRITTEN_LANGUAGES:
                kind = f"{feature}-{language}" if language == "rest-api" else f"{feature}-sdk-{language}"
                listed.append(
                    {
                        "type": kind,
                        "filename": f"{feature}-{language}.md",
                        "endpoint": f"/api/docs/{feature}/{language}",
                    }
                )
        return listed

    def doc_type(self, doc_type: str) -> Document:
        if doc_type == "instructions":
            return Document(doc_type, _read("instructions"))
        if doc_type not in _DOC_TYPE_DOCUMENT:
            raise ApiError(
                404, "DOCS_NOT_FOUND", "Documentation not found", f"Use one of: {', '.join(DOC_TYPES)}."
            )
        feature, language = _DOC_TYPE_DOCUMENT[doc_type]
        return Document(doc_type, self._content(feature, language))

    def sdk(self, feature: str, language: str) -> Document:
        if feature not in FEATURES or language not in LANGUAGES:
            raise ApiError(
                404,
                "DOCS_NOT_FOUND",
                "Documentation not found",
                f"Features: {', '.join(FEATURES)}; languages: {', '.join(WRITTEN_LANGUAGES)}.",
            )
        kind = f"{feature}-{language}" if language == "rest-api" else f"{feature}-sdk-{language}"
        return Document(kind, self._content(feature, language))

    def _content(self, feature: str, language: str) -> str:
        if feature not in _WRITTEN_FEATURES:
            return _not_here(feature)
        if language not in WRITTEN_LANGUAGES:
            raise _not_written(feature, language)
        return _read(f"{feature}-{language}")
