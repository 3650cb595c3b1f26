"""The plan: what applying a config file would change in the live config, as InsForge's CLI shows it.

Pure data in, pure data out. A change is one of

- `{section: "auth", op: "modify", key, from, to}`;
- `{section: "storage.buckets", op: "add", key, value: {public?}}`;
- `{section: "storage.buckets", op: "modify", key, field: "public", from, to}`;
- `{section: "storage.buckets", op: "remove", key, kept}`: a live bucket the file does not list, removed
  only with `prune` (else `kept: true`, and nothing happens to it);

with a summary counting adds, modifies, removes and kept. Unlike InsForge, a file without `storage.buckets`
does not manage buckets at all: no bucket is listed for removal, so pruning with a file that has only an
`auth` section cannot delete every bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The auth keys compared, in the order InsForge lists their changes.
AUTH_KEYS = ("jwt_expiry", "enable_signup", "site_url", "additional_redirect_urls")


def diff_config(live: Mapping[str, Any], file: Mapping[str, Any], *, prune: bool) -> dict[str, Any]:
    changes: list[dict[str, Any]] = []
    live_auth, file_auth = live.get("auth", {}), file.get("auth", {})
    for key in AUTH_KEYS:
        if key in file_auth and live_auth.get(key) != file_auth[key]:
            changes.append(
                {
                    "section": "auth",
                    "op": "modify",
                    "key": key,
                    "from": live_auth.get(key),
                    "to": file_auth[key],
                }
            )
    file_buckets = file.get("storage", {}).get("buckets")
    if file_buckets is not None:
        live_buckets = live.get("storage", {}).get("buckets", {})
        changes.extend(_bucket_changes(live_buckets, file_buckets, prune=prune))
    return {"changes": changes, "summary": summarize(changes)}


def _bucket_changes(
    live: Mapping[str, Mapping[str, Any]], file: Mapping[str, Mapping[str, Any]], *, prune: bool
) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    section = "storage.buckets"
    for name, wanted in file.items():
        if name not in live:
            changes.append({"section": section, "op": "add", "key": name, "value": dict(wanted)})
        elif "public" in wanted and wanted["public"] != live[name]["public"]:
            changes.append(
                {
                    "section": section,
                    "op": "modify",
                    "key": name,
                    "field": "public",
                    "from": live[name]["public"],
                    "to": wanted["public"],
                }
            )
    changes.extend(
        {"section": section, "op": "remove", "key": name, "kept": not prune}
        for name in live
        if name not in file
    )
    return changes


def summarize(changes: list[dict[str, Any]]) -> dict[str, int]:
    summary = {"add": 0, "modify": 0, "remove": 0, "kept": 0}
    for change in changes:
        op = change["op"]
        summary["kept" if op == "remove" and change["kept"] else op] += 1
    return summary


def acts(change: Mapping[str, Any]) -> bool:
    """Does applying this change do anything (a kept bucket's removal does not)?"""
    return not (change["op"] == "remove" and change["kept"])
