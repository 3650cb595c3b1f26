"""One error type for the whole gateway; each surface renders it in its own shape (OpenAI's or InsForge's).

Messages are written for the caller and never contain a key: upstream bodies are reduced to their message.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """A failure with the HTTP status, OpenAI `type` and `code` it must be reported with."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def openai_error_body(error: GatewayError) -> dict[str, object]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


#: InsForge's error codes for the gateway's statuses (its `{error, message, statusCode}` shape).
_INSFORGE_CODES = {
    400: "INVALID_INPUT",
    401: "AUTH_UNAUTHORIZED",
    402: "AI_QUOTA_EXCEEDED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    429: "RATE_LIMITED",
    502: "AI_UPSTREAM_UNAVAILABLE",
    503: "AI_UPSTREAM_UNAVAILABLE",
}


def insforge_code(error: GatewayError) -> str:
    if error.code == "no_provider_key":
        return "AI_INVALID_API_KEY"
    return _INSFORGE_CODES.get(error.status, "INTERNAL_ERROR" if error.status >= 500 else "INVALID_INPUT")
