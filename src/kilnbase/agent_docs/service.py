"""The documents behind `/api/docs` (InsForge's docs API, which `@insforge/mcp`'s `fetch-docs` and
`fetch-sdk-docs` read): written for Kilnbase and true to what this server does.

A document for a capability this server does not have says so plainly instead of documenting calls that
fail. Whether storage, edge functions or realtime are installed is read from the database (their tables
exist), so their documents change with the server, without this capability importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError

#: InsForge's doc types, in its order.
DOC_TYPES = (
    "instructions",
    "db-sdk",
    "auth-sdk",
    "storage-sdk",
    "functions-sdk",
    "ai-integration-sdk",
    "real-time",
    "deployment",
    "payments",
)
FEATURES = ("db", "storage", "functions", "auth", "ai", "realtime", "payments")
LANGUAGES = ("typescript", "rest-api", "python", "swift", "kotlin")
#: The languages documented for Kilnbase (Swift and Kotlin: not written; the REST API serves them).
WRITTEN_LANGUAGES = ("typescript", "rest-api", "python")
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
#: Features documented here; the others are absent from this server or installed by another capability.
_WRITTEN_FEATURES = ("db", "auth", "ai")
#: A feature another capability provides, and the table that exists once it is installed.
_INSTALLED_BY = {
    "storage": "storage.buckets",
    "functions": "functions.definitions",
    "realtime": "realtime.channels",
}
_TITLES = {
    "storage": "Storage (buckets and files)",
    "functions": "Edge functions",
    "realtime": "Realtime (channels, presence, database changes)",
    "deployment": "Site deployments",
    "payments": "Payments (Stripe, Razorpay)",
}

Language = Literal["typescript", "rest-api", "python", "swift", "kotlin"]


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


def _not_here(feature: str, installed: bool) -> str:
    title = _TITLES[feature]
    if installed:
        return (
            f"# {title}\n\nThis Kilnbase server has the {feature} capability installed, but its agent "
            f"documentation is not written yet. Read its routes with `get-backend-metadata` (the {feature} "
            "slice) and Kilnbase's README; call nothing you have not seen answer.\n"
        )
    return (
        f"# {title}: not available in this server\n\nThis Kilnbase server has no {feature} API yet: "
        f"calls to it answer 404 (`this Kilnbase server has no {feature} API`), and the official SDK's "
        f"{feature} methods fail. Do not write code that depends on it. Use what exists instead (database, "
        "auth, AI gateway: `fetch-docs instructions`).\n"
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
    def __init__(self, database: Database) -> None:
        self.database = database

    async def _installed(self, feature: str) -> bool:
        table = _INSTALLED_BY.get(feature)
        if table is None:
            return False
        async with self.database.as_owner() as cur:
            await cur.execute("select to_regclass(%s) is not null as installed", (table,))
            row = await cur.fetchone()
        return bool(row and row["installed"])

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

    async def doc_type(self, doc_type: str) -> Document:
        if doc_type == "instructions":
            return Document(doc_type, _read("instructions"))
        if doc_type not in _DOC_TYPE_DOCUMENT:
            raise ApiError(
                404, "DOCS_NOT_FOUND", "Documentation not found", f"Use one of: {', '.join(DOC_TYPES)}."
            )
        feature, language = _DOC_TYPE_DOCUMENT[doc_type]
        return Document(doc_type, await self._content(feature, language))

    async def sdk(self, feature: str, language: str) -> Document:
        if feature not in FEATURES or language not in LANGUAGES:
            raise ApiError(
                404,
                "DOCS_NOT_FOUND",
                "Documentation not found",
                f"Features: {', '.join(FEATURES)}; languages: {', '.join(WRITTEN_LANGUAGES)}.",
            )
        kind = f"{feature}-{language}" if language == "rest-api" else f"{feature}-sdk-{language}"
        return Document(kind, await self._content(feature, language))

    async def _content(self, feature: str, language: str) -> str:
        if feature not in _WRITTEN_FEATURES:
            return _not_here(feature, await self._installed(feature))
        if language not in WRITTEN_LANGUAGES:
            raise _not_written(feature, language)
        return _read(f"{feature}-{language}")
