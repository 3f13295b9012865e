"""The audit entry: what one leaf of the log says about one event.

Entries carry identifiers and hashes, never record content (DESIGN.md invariant 8), and never an identity code
(invariant 6): the log is append-only, so anything written into it stays for the life of the log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from audit.canonical import canonical_json, canonical_text, utf8
from audit.errors import AuditError

ENTRY_VERSION = 1

EVENT_TYPES = frozenset(
    {
        "disclosure:permit",
        "disclosure:deny",
        "decision:query",
        "consent:request",
        "consent:grant",
        "consent:withdraw",
        "consent:refuse",
        "consent:request_expire",
        "consent:expire",
        "consent:attest",
        "record:deposit",
        "notice:send",
        "notice:ack",
        "token:issue",
        "token:revoke",
        "relationship:start",
        "relationship:end",
        "person:resolve",
        "representation:register",
        "webhook:register",
        "webhook:disable",
        "record:erase",
        "dpo:review",
        "dpo:open_commitment",
        "dpo:report",
        "audit:query",
    }
)

# The shape of a henkilötunnus, DDMMYYCZZZQ (broker/domain/hetu.py has the full rules). The look-behind keeps
# the six digits from being the tail of a longer token: without it about one random UUID in a hundred
# ("…345678-1234-…") would look like a code and stop the disclosure that tried to log it.
_HETU_LIKE = re.compile(r"(?<![0-9A-Za-z])\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]")
# The same test written to start at the character after the six digits: a string has a match of this exactly
# when it has one of _HETU_LIKE (both ask for the same characters at the same places), but that character
# ("-", "+" or a capital) is rare in entries, so re skips ahead to it instead of trying the pattern at every
# digit of every hex digest: about four times faster over a disclosure's entry. Used on the whole canonical
# text of an entry (`_encode`).
_HETU_SEPARATOR_FIRST = re.compile(r"[-+A-FU-Y](?<=(?<![0-9A-Za-z])\d{6}[-+A-FU-Y])\d{3}[0-9A-Y]")
_HEX_256 = re.compile(r"[0-9a-f]{64}")


def build_entry(**arguments: Any) -> dict[str, Any]:
    """Return the entry as a JSON-ready dict whose canonical bytes (`entry_bytes`) become its leaf: the arguments
    of `encode_entry`, decoded from its bytes — a fresh copy, so later changes to `basis` or `detail` cannot alter
    it."""
    return dict(json.loads(encode_entry(**arguments)))


def encode_entry(
    *,
    index: int,
    logged_at: datetime,
    event: str,
    request_id: str | None,
    partner: str | None,
    organisation: str | None,
    actor_role: str | None,
    actor_commitment: str | None,
    person_id: str | None,
    category: str | None,
    purpose: str | None,
    effect: str | None,
    basis: dict[str, Any] | None,
    policy_version: str | None,
    record_ids: Sequence[str] = (),
    fields: Sequence[str] = (),
    payload_sha256: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bytes:
    """The entry's canonical bytes (RFC 8785), the bytes stored and hashed into leaf `index`, canonicalised once.

    Members whose value is None are left out. Raises AuditError when an argument is malformed or a string
    anywhere in the entry looks like a personal identity code.
    """
    entry = _entry(
        index=index,
        logged_at=logged_at,
        event=event,
        request_id=request_id,
        partner=partner,
        organisation=organisation,
        actor_role=actor_role,
        actor_commitment=actor_commitment,
        person_id=person_id,
        category=category,
        purpose=purpose,
        effect=effect,
        basis=basis,
        policy_version=policy_version,
        record_ids=record_ids,
        fields=fields,
        payload_sha256=payload_sha256,
        detail=detail,
    )
    return _encode(entry, entry)[0]


def _entry(
    *,
    index: int,
    logged_at: datetime,
    event: str,
    request_id: str | None,
    partner: str | None,
    organisation: str | None,
    actor_role: str | None,
    actor_commitment: str | None,
    person_id: str | None,
    category: str | None,
    purpose: str | None,
    effect: str | None,
    basis: dict[str, Any] | None,
    policy_version: str | None,
    record_ids: Sequence[str] = (),
    fields: Sequence[str] = (),
    payload_sha256: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise AuditError("index must be a non-negative integer")
    if event not in EVENT_TYPES:
        raise AuditError("unknown event type; see audit.EVENT_TYPES")
    text = {
        "request_id": request_id,
        "partner": partner,
        "organisation": organisation,
        "actor_role": actor_role,
        "person_id": person_id,
        "category": category,
        "purpose": purpose,
        "effect": effect,
        "policy_version": policy_version,
    }
    for name, value in text.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise AuditError(f"{name} must be a non-empty string or None")
    for name, digest in (("actor_commitment", actor_commitment), ("payload_sha256", payload_sha256)):
        if digest is not None and (not isinstance(digest, str) or not _HEX_256.fullmatch(digest)):
            raise AuditError(f"{name} must be 64 lowercase hex digits")
    for name, mapping in (("basis", basis), ("detail", detail)):
        if mapping is not None and not isinstance(mapping, dict):
            raise AuditError(f"{name} must be a dict or None")

    entry: dict[str, Any] = {
        "v": ENTRY_VERSION,
        "index": index,
        "logged_at": _rfc3339_utc(logged_at),
        "event": event,
        **text,
        "actor_commitment": actor_commitment,
        "basis": basis,
        "record_ids": _string_list("record_ids", record_ids),
        "fields": _string_list("fields", fields),
        "payload_sha256": payload_sha256,
        "detail": detail,
    }
    return {name: value for name, value in entry.items() if value is not None}


def _encode(entry: dict[str, Any], *parts: dict[str, Any]) -> list[bytes]:
    """The canonical bytes of each of `parts` (which hold `entry`'s members), once `entry` has been checked for
    anything that looks like a personal identity code. The refusals and their order are those of checking each
    member's strings (`_refuse_identity_codes`) and then canonicalising each part in turn.

    The check searches the canonical text instead of every string one by one, when that text has no backslash,
    that is, no escape (RFC 8785 §3.2.2.2): then each string stands in it as itself between quotes, and a match,
    made only of letters, digits, "+" and "-", can neither span a quote nor arise outside a string, where the
    only digits are integers and are followed by "," "]" or "}". Anything else is checked string by string."""
    texts = [canonical_text(part) for part in parts]
    if any(text is None or "\\" in text or _HETU_SEPARATOR_FIRST.search(text) for text in texts):
        _refuse_identity_codes(entry)
    return [canonical_json(part) if text is None else utf8(text) for part, text in zip(parts, texts, strict=True)]


def _refuse_identity_codes(entry: dict[str, Any]) -> None:
    """Raise AuditError naming the first member, in entry order, with a string (a member name included) that
    looks like an identity code; its name only, never the string (audit/errors.py)."""
    for name in entry:
        if any(_HETU_LIKE.search(s) for s in _strings(entry[name])):
            raise AuditError(f"{name} contains something that looks like a personal identity code")


def encode_pending(**arguments: Any) -> tuple[bytes, int]:
    """The entry before it has a tree position: `encode_entry`'s arguments without `index`, returned as the
    canonical bytes of every other member and the offset at which `place_index` puts the index member.

    Entries are appended inside the transactions of the events they record, and a sequencer gives them their
    positions later (DESIGN.md, "Growing past one machine"), so the index is the one member not known at append
    time. Canonical JSON lists members in key order (RFC 8785 §3.2.3), and every entry has members on both
    sides of "index" ("event" before it, "logged_at" and "v" after it): splicing `"index":N,` in at that offset
    gives exactly the bytes `encode_entry` would have made, without parsing or re-canonicalising in the
    sequencer.
    """
    if "index" in arguments:
        raise TypeError("encode_pending takes no index: the sequencer assigns it")
    entry = _entry(index=0, **arguments)
    del entry["index"]
    # Member names are ASCII, so UTF-16 code-unit order (RFC 8785 §3.2.3) is plain string order here.
    before, after = _encode(
        entry,
        {name: value for name, value in entry.items() if name < "index"},
        {name: value for name, value in entry.items() if name > "index"},
    )
    return before[:-1] + b"," + after[1:], len(before)


def place_index(pending: bytes, split: int, index: int) -> bytes:
    """The final entry bytes: `pending` from `encode_pending` with the index member put in at `split`."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise AuditError("index must be a non-negative integer")
    if not 0 < split < len(pending) or pending[split - 1 : split] != b",":
        raise AuditError("the split offset does not follow a member separator")
    return b'%s"index":%d,%s' % (pending[:split], index, pending[split:])


def entry_bytes(entry: dict[str, Any]) -> bytes:
    """The bytes that are stored, exported and hashed into the leaf: RFC 8785 canonical JSON."""
    return canonical_json(entry)


def _rfc3339_utc(moment: datetime) -> str:
    # RFC 3339 §5.6 in UTC with a fixed six-digit fraction, so every timestamp has one spelling.
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise AuditError("logged_at must be a timezone-aware datetime")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _string_list(name: str, values: Sequence[str]) -> list[str]:
    # A bare str is a Sequence[str] too; taking it letter by letter would log nonsense.
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
        raise AuditError(f"{name} must be a sequence of non-empty strings")
    return list(values)


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON-like value, member names included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for name, item in value.items():
            if isinstance(name, str):
                yield name
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


# The acting professional appears in a leaf only as a salted commitment. The person may read their own log
# entries, which must not name staff (Client Data Act 703/2023 74 §); the DPO keeps the salt and the staff id
# beside the entry and can open the commitment when needed. The salt has a fixed length, so salt || id parses
# one way only, and 256 random bits make the commitment impossible to open by guessing staff ids.


def new_actor_salt() -> str:
    return secrets.token_hex(32)


def commit_actor(actor_id: str, salt_hex: str) -> str:
    """Hex SHA-256(salt || UTF-8 actor id)."""
    if not isinstance(salt_hex, str) or not _HEX_256.fullmatch(salt_hex):
        raise AuditError("the actor salt must be 64 lowercase hex digits (32 bytes)")
    if not isinstance(actor_id, str) or not actor_id:
        raise AuditError("the actor id must be a non-empty string")
    return hashlib.sha256(bytes.fromhex(salt_hex) + actor_id.encode("utf-8")).hexdigest()


def verify_actor_commitment(commitment: str, actor_id: str, salt_hex: str) -> None:
    """Return if `commitment` opens to `actor_id` with `salt_hex`; raise AuditError otherwise."""
    expected = commit_actor(actor_id, salt_hex).encode("ascii")
    given = commitment.encode("utf-8") if isinstance(commitment, str) else b""
    if not hmac.compare_digest(expected, given):
        raise AuditError("the actor commitment does not match this actor id and salt")
