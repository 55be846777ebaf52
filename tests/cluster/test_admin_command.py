"""`ymera admin`: the first operators of the HTTP API, created straight on storage."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from cluster.cli import main
from serve_apps.api_keys import parse_api_key, secret_matches
from serve_apps.passwords import verify_password
from storage.auth_store import AuthStore


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("YMERA_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("YMERA_DATABASE_URL", raising=False)
    return tmp_path


def stored(state, read):
    async def run():
        store = await AuthStore.open(f"sqlite:///{state / 'ymera.db'}")
        try:
            return await read(store)
        finally:
            await store.close()
    return asyncio.run(run())


def test_create_user_stores_a_hashed_password_and_audits_it(state, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
    assert main(["admin", "create-user", "--tenant", "acme", "--username", "alice",
                 "--role", "operator", "--password-stdin", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)

    user = stored(state, lambda s: s.user_by_name("acme", "alice"))
    audit, _ = stored(state, lambda s: s.list_audit("acme"))

    assert created == {"id": user.id, "tenant": "acme", "username": "alice", "role": "operator"}
    assert verify_password(user.password_hash, "correct horse battery staple")
    assert "correct horse" not in user.password_hash
    assert [(e.actor, e.action, e.target) for e in audit] == [
        ("system:cli", "user_created", user.id)]


def test_a_weak_password_is_refused_and_nothing_is_stored(state, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["admin", "create-user", "--username", "bob", "--password-stdin"]) == 1
    assert "at least 12 characters" in capsys.readouterr().err
    assert not (state / "ymera.db").exists()  # refused before storage was touched


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "zarqonvitesse"])  # the latter: its
def test_a_guessable_password_is_refused_with_advice(  # own username and tenant
        state, monkeypatch, capsys, password):
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    assert main(["admin", "create-user", "--tenant", "vitesse", "--username", "zarqon",
                 "--password-stdin"]) == 1
    error = capsys.readouterr().err
    assert "password is too easy to guess" in error and password not in error
    assert not (state / "ymera.db").exists()


def test_the_same_username_may_be_created_in_two_tenants(state, monkeypatch, capsys):
    for tenant in ("acme", "globex"):
        monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
        assert main(["admin", "create-user", "--tenant", tenant, "--username", "alice",
                     "--password-stdin", "--json"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
    assert main(["admin", "create-user", "--tenant", "acme", "--username", "alice",
                 "--password-stdin"]) == 1
    assert "taken in this tenant" in capsys.readouterr().err
    assert stored(state, lambda s: s.user_by_name("globex", "alice")).tenant == "globex"


def test_create_key_prints_the_key_once_and_stores_only_its_hash(state, capsys):
    assert main(["admin", "create-key", "--tenant", "acme", "--role", "submitter",
                 "--name", "ci", "--expires-in-days", "30", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)

    key_id, secret = parse_api_key(created["key"])
    record = stored(state, lambda s: s.api_key(key_id))

    assert key_id == created["id"] and record.role == "submitter" and record.tenant == "acme"
    assert secret_matches(record.secret_hash, secret) and secret not in record.secret_hash
    assert record.expires_at is not None and record.revoked_at is None


def test_the_command_line_grants_platform_admin(state, capsys):
    assert main(["admin", "create-key", "--tenant", "acme", "--role", "platform_admin",
                 "--name", "ops", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)

    (record,) = stored(state, lambda s: s.list_api_keys("acme"))
    assert created["role"] == record.role == "platform_admin"


def test_the_platform_audit_log_is_no_tenant_to_create_users_or_keys_in(state, capsys):
    assert main(["admin", "create-key", "--tenant", "_platform", "--role", "viewer"]) == 1
    assert "reserved" in capsys.readouterr().err
    assert not (state / "ymera.db").exists()
