"""Webhook signing: what a receiver checks with the Standard Webhooks library, including both
secrets of a rotation's overlap."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from actors.webhook_signing import (
    new_message_id, new_secret, sign_headers, signer, verify_signature)

BODY = b'{"type":"task.succeeded","data":{"task_id":"t1","result":"\xc3\xa9t\xc3\xa9"}}'


def test_a_new_secret_is_32_random_bytes_in_the_whsec_form() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert new_message_id().startswith("msg_") and new_message_id() != new_message_id()


def test_the_library_verifies_what_we_sign_and_nothing_altered() -> None:
    secret = new_secret()
    headers = sign_headers([secret], "msg_abc", BODY, datetime.now(UTC))

    assert Webhook(secret).verify(BODY, headers)["data"]["task_id"] == "t1"
    assert headers["webhook-id"] == "msg_abc"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "ymera-webhooks/1"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"t1", b"t2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_during_a_rotation_both_secrets_verify_and_afterwards_only_the_new() -> None:
    old, new = new_secret(), new_secret()
    now = datetime.now(UTC)

    overlapping = sign_headers([new, old], "msg_1", BODY, now)
    after = sign_headers([new], "msg_1", BODY, now)

    signatures = overlapping["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert signatures[0] == after["webhook-signature"]  # the new secret's comes first
    assert Webhook(old).verify(BODY, overlapping) and Webhook(new).verify(BODY, overlapping)
    assert Webhook(new).verify(BODY, after)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(BODY, after)


def test_the_timestamp_is_the_attempts_and_stale_ones_are_refused() -> None:
    secret = new_secret()
    sent_at = datetime.now(UTC) - timedelta(minutes=10)
    headers = sign_headers([secret], "msg_1", BODY, sent_at)

    assert headers["webhook-timestamp"] == str(int(sent_at.timestamp()))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)
    assert not verify_signature(secret, BODY, headers)


def test_verify_signature_accepts_any_header_case_and_a_plain_secret() -> None:
    headers = sign_headers(["an-operator-secret"], "msg_9", BODY, datetime.now(UTC))
    shouting = {name.upper(): value for name, value in headers.items()}

    assert verify_signature("an-operator-secret", BODY, shouting, max_age_s=60)
    assert Webhook(b"an-operator-secret").verify(BODY, headers)  # the plain secret's bytes
    assert not verify_signature("another-secret", BODY, shouting)
    assert not verify_signature("an-operator-secret", BODY, {})


@pytest.mark.parametrize(("secrets", "message"), [
    ([], "at least one"), ([""], "may not be empty"), (["whsec_not*base64!"], "base64"),
    (["whsec_"], "may not be empty"),
])
def test_unusable_secrets_are_refused_clearly(secrets: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sign_headers(secrets, "msg_1", BODY, datetime.now(UTC))


def test_a_signer_of_a_whsec_secret_matches_the_librarys_own_decoding() -> None:
    secret = new_secret()
    at = datetime.now(UTC)
    assert signer(secret).sign("msg_1", at, BODY) == Webhook(secret).sign("msg_1", at, BODY)
