"""Receiving ACA-Py webhooks: authentication, parsing, and the key that makes processing idempotent.

ACA-Py posts ``POST <webhook-url>/topic/<topic>/`` with the ``x-api-key`` header set from the
``url#key`` it was configured with, and re-delivers on failure; the same state of a record may arrive
twice. Payloads carry personal data (credential values, presentations): nothing here logs them, and
errors name the topic and the reason only. The caller keeps the processed keys in its own database
(one row per :attr:`WebhookEvent.key`, inserted once), so two workers behind one PostgreSQL agree.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import WebhookRefused

_TOPIC = re.compile(r"^[a-z0-9_]{1,64}$")
MAX_BODY = 1024 * 1024
#: Length of the processed-event key column (``aries.storage.WebhookEventMixin.key``).
MAX_STORED_KEY = 300

# topic -> the record id member of its payload
RECORD_IDS = {
    "connections": "connection_id",
    "out_of_band": "oob_id",
    "issue_credential_v2_0": "cred_ex_id",
    "present_proof_v2_0": "pres_ex_id",
}


@dataclass(frozen=True)
class WebhookEvent:
    """One delivery: topic, the record's thread id, id and state, and the payload (never log it)."""

    topic: str
    thread_id: str
    record_id: str
    state: str
    payload: dict[str, Any]

    @property
    def key(self) -> str:
        """Idempotency key: the same thread reaching the same state is one event, however often delivered."""
        return f"{self.topic}:{self.thread_id}:{self.state}"

    @property
    def stored_key(self) -> str:
        """:attr:`key` as the services store it (a column of :data:`MAX_STORED_KEY` characters): the key
        itself, or for a longer one (a thread id the other party chose) its start and its SHA-256. Every
        write and delete of the processed-event row uses this one value."""
        key = self.key
        if len(key) <= MAX_STORED_KEY:
            return key
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{key[:MAX_STORED_KEY - len(digest) - 1]}#{digest}"


def authenticate(headers: Mapping[str, str], api_key: str) -> None:
    """Refuse a delivery whose ``x-api-key`` is missing or wrong (constant-time comparison)."""
    given = headers.get("x-api-key") or ""
    if not api_key or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise WebhookRefused("webhook_unauthorized", "webhook without the right x-api-key")


def parse(topic: str, body: bytes) -> WebhookEvent:
    """Parse a delivery; typed errors for unknown topics shapes, bad JSON and missing members."""
    if not _TOPIC.match(topic or ""):
        raise WebhookRefused("webhook_bad_topic", "webhook topic is not a known shape")
    if len(body) > MAX_BODY:
        raise WebhookRefused("webhook_too_large", "webhook body too large")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRefused("webhook_bad_json", f"webhook {topic} body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookRefused("webhook_bad_json", f"webhook {topic} body is not a JSON object")
    record = payload.get("cred_ex_record") if topic == "issue_credential_v2_0" and "cred_ex_record" in payload \
        else payload
    if not isinstance(record, dict):
        raise WebhookRefused("webhook_bad_payload", f"webhook {topic} has no record")
    id_member = RECORD_IDS.get(topic, "")
    record_id = str(record.get(id_member) or "")
    thread_id = str(record.get("thread_id") or record.get("invi_msg_id") or record_id)
    state = str(record.get("state") or "")
    return WebhookEvent(topic=topic, thread_id=thread_id, record_id=record_id, state=state, payload=record)


def receive(headers: Mapping[str, str], topic: str, body: bytes, api_key: str) -> WebhookEvent:
    """:func:`authenticate` then :func:`parse`."""
    authenticate(headers, api_key)
    return parse(topic, body)
