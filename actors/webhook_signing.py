"""How every webhook this platform sends is signed: the Standard Webhooks scheme
(https://www.standardwebhooks.com), so receivers verify with any of its libraries.

    headers = sign_headers([secret], "msg_2b0c…", body, datetime.now(UTC))
    Webhook(secret).verify(body, headers)          # the receiver, with `standardwebhooks`

Guarantees: `sign_headers` gives `webhook-id` (the message id, the same on every retry so a
receiver can drop duplicates), `webhook-timestamp` (unix seconds of this attempt) and
`webhook-signature`: one `v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"` per secret,
separated by spaces, the current secret first, so that during a rotation's overlap a receiver
holding either secret verifies. `new_secret` makes a `whsec_` secret of 32 random bytes.

A secret that does not start with `whsec_` (an operator's older YMERA_WEBHOOK_SECRET) is used as
its UTF-8 bytes; a receiver passes `Webhook(secret.encode())`, or calls `verify_signature`.
"""

from __future__ import annotations

import base64
import binascii
import secrets as random_source
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from storage.webhook_store import new_secret  # the one maker of secrets, re-exported here

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32
MESSAGE_ID_PREFIX: Final = "msg_"
USER_AGENT: Final = "ymera-webhooks/1"
SIGNED_HEADERS: Final = ("webhook-id", "webhook-timestamp", "webhook-signature")


def new_message_id() -> str:
    """A fresh `webhook-id` for a message sent once (deliveries carry their own)."""
    return MESSAGE_ID_PREFIX + random_source.token_hex(16)


def signer(secret: str) -> Webhook:
    """The Standard Webhooks signer of `secret`: a `whsec_` secret is decoded from base64,
    any other non-empty string is used as its UTF-8 bytes. `ValueError` for an empty secret
    or a `whsec_` one that is not base64."""
    if not secret:
        raise ValueError("a webhook signing secret may not be empty")
    if not secret.startswith(SECRET_PREFIX):
        return Webhook(secret.encode())
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"a {SECRET_PREFIX} signing secret must be base64 after its prefix")\
            from exc
    if not key:
        raise ValueError("a webhook signing secret may not be empty")
    return Webhook(key)


def sign_headers(secrets: Sequence[str], msg_id: str, body: bytes,
                 at: datetime) -> dict[str, str]:
    """The headers of a webhook carrying `body`, sent at `at`: its id, timestamp and one
    signature per secret (current first), plus content-type and user-agent. `ValueError` when
    `secrets` is empty or holds an unusable secret."""
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    signatures = " ".join(signer(secret).sign(msg_id, at, body) for secret in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json",
            "user-agent": USER_AGENT}


def verify_signature(secret: str, body: bytes, headers: Mapping[str, str], *,
                     max_age_s: float | None = None) -> bool:
    """Whether a webhook is genuine: `body` is the raw request body exactly as received, and
    `headers` its headers (any case). Standard Webhooks' verifier checks the signature in
    constant time and refuses timestamps more than 5 minutes from now (a captured request
    cannot be replayed later); `max_age_s` narrows that window further."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        signer(secret).verify(body, lowered, json_parse=False)
        stamp = int(lowered["webhook-timestamp"])
    except (WebhookVerificationError, ValueError, KeyError):
        return False
    return max_age_s is None or abs(time.time() - stamp) <= max_age_s
