"""Keys are generated once, kept with mode 0600, overridable by InsForge's env names, and validated."""

from __future__ import annotations

import base64
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kilnbase.config import Settings
from kilnbase.keys.project_keys import (
    ANON_KEY_PATTERN,
    API_KEY_PATTERN,
    KeyConfigurationError,
    load_project_keys,
    load_stored_keys,
    parse_encryption_key,
)


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]


def test_first_start_generates_every_key_with_the_right_shape(tmp_path: Path) -> None:
    keys = load_project_keys(settings(tmp_path))
    assert API_KEY_PATTERN.fullmatch(keys.api_key)
    assert ANON_KEY_PATTERN.fullmatch(keys.anon_key)
    assert len(keys.jwt_secret) >= 32
    assert len(keys.encryption_key) == 32
    assert "PRIVATE KEY" in keys.signing_key_pem and keys.key_id
    assert keys.encryption_key != keys.jwt_secret.encode()[:32]
    mode = stat.S_IMODE((tmp_path / "keys.json").stat().st_mode)
    assert mode == 0o600


def test_restart_reads_the_same_keys(tmp_path: Path) -> None:
    first = load_project_keys(settings(tmp_path))
    second = load_project_keys(settings(tmp_path))
    assert first == second


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    load_project_keys(settings(tmp_path))
    (tmp_path / "keys.json").chmod(0o644)
    load_project_keys(settings(tmp_path))
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600


def test_concurrent_first_starts_agree_on_one_set_of_keys(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: load_stored_keys(tmp_path / "keys.json"), range(8)))
    assert all(r == results[0] for r in results)
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_environment_overrides_are_used_and_not_written_back(tmp_path: Path) -> None:
    api_key = "ik_" + "ab" * 32
    anon_key = "anon_" + "cd" * 32
    keys = load_project_keys(
        settings(
            tmp_path,
            access_api_key=api_key,
            access_anon_key=anon_key,
            jwt_secret="j" * 40,
            encryption_key="e" * 64,
            root_admin_password="pw-from-env",
        )
    )
    assert (keys.api_key, keys.anon_key, keys.jwt_secret) == (api_key, anon_key, "j" * 40)
    assert keys.encryption_key == bytes.fromhex("e" * 64)
    assert keys.root_admin_password == "pw-from-env"
    stored = json.loads((tmp_path / "keys.json").read_text())
    assert api_key not in stored.values() and anon_key not in stored.values()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"access_api_key": "not-a-key"}, "ACCESS_API_KEY"),
        ({"access_api_key": "ik_" + "z" * 64}, "ACCESS_API_KEY"),
        ({"access_anon_key": "anon_short"}, "ACCESS_ANON_KEY"),
        ({"jwt_secret": "short"}, "JWT_SECRET"),
        ({"encryption_key": "tiny"}, "ENCRYPTION_KEY"),
        ({"jwt_secret": "s" * 40, "encryption_key": "s" * 40}, "must differ"),
    ],
)
def test_bad_overrides_are_refused_with_a_clear_message(
    tmp_path: Path, overrides: dict[str, str], fragment: str
) -> None:
    with pytest.raises(KeyConfigurationError, match=fragment):
        load_project_keys(settings(tmp_path, **overrides))


def test_encryption_key_forms() -> None:
    raw = bytes(range(32))
    assert parse_encryption_key(raw.hex()) == raw
    assert parse_encryption_key(base64.b64encode(raw).decode()) == raw
    derived = parse_encryption_key("a passphrase that is long enough to use")
    assert len(derived) == 32 and derived == parse_encryption_key("a passphrase that is long enough to use")


def test_a_damaged_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps({"api_key": "ik_" + "0" * 64}))
    with pytest.raises(KeyConfigurationError, match="lacks"):
        load_project_keys(settings(tmp_path))


def test_jwks_holds_only_the_public_key(tmp_path: Path) -> None:
    keys = load_project_keys(settings(tmp_path))
    (jwk,) = keys.jwks()["keys"]
    assert jwk["kid"] == keys.key_id and jwk["alg"] == "RS256" and jwk["use"] == "sig"
    assert set(jwk) >= {"n", "e"} and not set(jwk) & {"d", "p", "q", "dp", "dq", "qi"}
