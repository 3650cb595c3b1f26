"""The config file's shape, InsForge's (`insforge.toml` as JSON), checked before anything is read or changed.

A file is `{project_id?, auth?, storage?: {buckets?: {<name>: {public?}}}}`. Every problem is a
`ConfigValidationError` naming where it is (`auth.enable_signup`, `storage.buckets.media.public`), answered as
InsForge answers it: 400 `{error: "config_validation", message: "config.<path>: ...", path}`.

Stricter than InsForge in three ways, each so that nothing is accepted and then ignored: a key this schema
does not know is refused (InsForge drops it silently); `auth.site_url` is refused, as Kilnbase has no site URL
(InsForge accepts it and stores nothing); `auth.jwt_expiry` is taken only when it is the lifetime the server
already signs with (`KILNBASE_AUTH_ACCESS_TOKEN_SECONDS`, a setting of the process, not of the database), so a
file exported by `GET /api/config` applies unchanged, while a file that asks for another lifetime is told
where that is set. Values are checked by the same rules as the individual APIs (a redirect URL by
`PUT /api/auth/config`'s, a bucket name by the bucket routes'), reported at their path here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kilnbase.http.errors import ApiError

#: Most redirect URLs and buckets a file may list (the request's body limit bounds their sizes).
MAX_REDIRECT_URLS = 100
MAX_URL_LENGTH = 2048
MAX_BUCKETS = 1000
MAX_PROJECT_ID_LENGTH = 200

_TOP_KEYS = ("project_id", "auth", "storage")
_AUTH_KEYS = ("jwt_expiry", "enable_signup", "site_url", "additional_redirect_urls")
_STORAGE_KEYS = ("buckets",)
_BUCKET_KEYS = ("public",)
#: The auth settings of the file, by the names `PUT /api/auth/config` gives them.
AUTH_FIELDS = {"enable_signup": "disableSignup", "additional_redirect_urls": "allowedRedirectUrls"}

FIX_CONFIG = "Fix the value at `path` in the config and apply it again; GET /api/config shows the live one."


class ConfigValidationError(ApiError):
    """A file the schema refuses, with where (`path`, empty for the whole file): made by `invalid`."""

    def __init__(self, status: int, code: str, message: str, next_actions: str | None, *, path: str) -> None:
        super().__init__(status, code, message, next_actions)
        self.path = path


def invalid(path: str, problem: str, next_actions: str = FIX_CONFIG) -> ConfigValidationError:
    where = f"config.{path}" if path else "config"
    return ConfigValidationError(400, "config_validation", f"{where}: {problem}", next_actions, path=path)


@dataclass(frozen=True)
class Checks:
    """What the sections check with the individual APIs' own rules."""

    #: The lifetime of the access tokens the server signs, in seconds.
    access_token_seconds: int
    #: Raises pydantic's `ValidationError` where `PUT /api/auth/config` refuses a change.
    auth_change: Callable[[Mapping[str, Any]], None]
    #: Raises the bucket routes' `ApiError` for a name they refuse.
    bucket_name: Callable[[str], None]


def _object(value: Any, path: str, known: tuple[str, ...], what: str = "an object") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, f"must be {what}")
    for key in value:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise invalid(where, f"is not a known key (known here: {', '.join(known)})")
    return value


def validate_config(raw: Any, checks: Checks) -> dict[str, Any]:
    """The file, checked, as plain data in its own shape (only the keys it gave)."""
    given = _object(raw, "", _TOP_KEYS)
    out: dict[str, Any] = {}
    if "project_id" in given:
        project_id = given["project_id"]
        if not isinstance(project_id, str) or len(project_id) > MAX_PROJECT_ID_LENGTH:
            raise invalid("project_id", f"must be a string of at most {MAX_PROJECT_ID_LENGTH}")
        out["project_id"] = project_id
    if "auth" in given:
        out["auth"] = _auth(given["auth"], checks)
    if "storage" in given:
        out["storage"] = _storage(given["storage"], checks)
    return out


def _auth(raw: Any, checks: Checks) -> dict[str, Any]:
    given = _object(raw, "auth", _AUTH_KEYS)
    out: dict[str, Any] = {}
    if "jwt_expiry" in given:
        expiry = given["jwt_expiry"]
        if isinstance(expiry, bool) or not isinstance(expiry, int) or expiry <= 0:
            raise invalid("auth.jwt_expiry", "must be a positive integer")
        if expiry != checks.access_token_seconds:
            raise invalid(
                "auth.jwt_expiry",
                f"Kilnbase signs access tokens for KILNBASE_AUTH_ACCESS_TOKEN_SECONDS "
                f"({checks.access_token_seconds} here), a setting of the server, not of the config: "
                f"set it there, or send {checks.access_token_seconds} or leave jwt_expiry out",
            )
        out["jwt_expiry"] = expiry
    _copy_boolean(given, "enable_signup", "auth", out)
    if "site_url" in given:
        raise invalid(
            "auth.site_url",
            "is not supported by Kilnbase, which has no site URL: list the URLs that sign-in, sign-up and "
            "password-reset flows may redirect to in auth.additional_redirect_urls",
        )
    if "additional_redirect_urls" in given:
        out["additional_redirect_urls"] = _redirect_urls(given["additional_redirect_urls"])
    _check_auth_values(out, checks)
    return out


def _redirect_urls(raw: Any) -> list[str]:
    path = "auth.additional_redirect_urls"
    if not isinstance(raw, list) or not all(isinstance(url, str) for url in raw):
        raise invalid(path, "must be an array of strings")
    if len(raw) > MAX_REDIRECT_URLS:
        raise invalid(path, f"must list at most {MAX_REDIRECT_URLS} URLs")
    for index, url in enumerate(raw):
        if len(url) > MAX_URL_LENGTH:
            raise invalid(f"{path}.{index}", f"must be at most {MAX_URL_LENGTH} characters")
    return list(raw)


def _check_auth_values(auth: Mapping[str, Any], checks: Checks) -> None:
    """The values, by `PUT /api/auth/config`'s own model; its first complaint reported at the file's path."""
    change = auth_change(auth)
    try:
        checks.auth_change(change)
    except ValidationError as exc:
        error = exc.errors()[0]
        field, *rest = error["loc"]
        name = next(key for key, api_name in AUTH_FIELDS.items() if api_name == field)
        path = ".".join(["auth", name, *(str(part) for part in rest)])
        raise invalid(path, str(error["msg"]).removeprefix("Value error, ")) from None


def auth_change(auth: Mapping[str, Any]) -> dict[str, Any]:
    """The file's auth settings as `PUT /api/auth/config`'s body (`enable_signup` is `disableSignup`'s
    opposite); `jwt_expiry` is not among them (see the module's docstring)."""
    change: dict[str, Any] = {}
    if "enable_signup" in auth:
        change["disableSignup"] = not auth["enable_signup"]
    if "additional_redirect_urls" in auth:
        change["allowedRedirectUrls"] = list(auth["additional_redirect_urls"])
    return change


def _storage(raw: Any, checks: Checks) -> dict[str, Any]:
    given = _object(raw, "storage", _STORAGE_KEYS)
    out: dict[str, Any] = {}
    if "buckets" in given:
        buckets = _object_map(given["buckets"], "storage.buckets")
        if len(buckets) > MAX_BUCKETS:
            raise invalid("storage.buckets", f"must hold at most {MAX_BUCKETS} buckets")
        out["buckets"] = {name: _bucket(name, value, checks) for name, value in buckets.items()}
    return out


def _object_map(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "must be an object map")
    return value


def _bucket(name: str, raw: Any, checks: Checks) -> dict[str, Any]:
    path = f"storage.buckets.{name}"
    try:
        checks.bucket_name(name)
    except ApiError as exc:
        raise invalid(path, exc.message) from None
    given = _object(raw, path, _BUCKET_KEYS)
    out: dict[str, Any] = {}
    _copy_boolean(given, "public", path, out)
    return out


def _copy_boolean(given: Mapping[str, Any], key: str, path: str, out: dict[str, Any]) -> None:
    """`given[key]`, when there, into `out`: a boolean, else refused at `path.key`."""
    if key in given:
        if not isinstance(given[key], bool):
            raise invalid(f"{path}.{key}", "must be a boolean")
        out[key] = given[key]
