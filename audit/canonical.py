"""RFC 8785 JSON Canonicalization Scheme (JCS), restricted to what audit entries need.

The leaf hash of an entry is taken over these bytes (DESIGN.md, "Audit export format"), so the same value must
give the same bytes in every implementation, today and years from now. RFC 8785 fixes that: I-JSON data
(RFC 7493), members sorted by UTF-16 code units, ECMAScript string and number serialisation, UTF-8.

Numbers are integers only. ECMAScript number serialisation of floats (RFC 8785 §3.2.2.3) is the part of JCS
that implementations most often get wrong, and the audit log has no use for fractions; refusing them keeps
every conforming verifier in agreement. Integers are held to I-JSON's exactly representable range
(RFC 7493 §2.2), inside which an integer's ECMAScript serialisation is its plain decimal form.

Every audit entry is canonicalised while its event's request waits, so there are two paths to the same bytes:
the standard library's C encoder for plain values (`canonical_text`; a value is checked to be plain before it
is trusted to it), and `_write`, the general path, for everything else, refusals included.
"""

from __future__ import annotations

import json
import re
from typing import Any

from audit.errors import CanonicalisationError

# RFC 7493 §2.2: integers in [-(2**53)+1, (2**53)-1] are exact in IEEE 754 doubles, hence in every parser.
MAX_SAFE_INTEGER = 2**53 - 1
# Entries are shallow; a bound turns runaway or cyclic input into an error rather than a RecursionError.
MAX_DEPTH = 64

# RFC 8785 §3.2.2.2: the two-character escapes where ECMAScript has one, \u00xx with lowercase hex for the
# other control characters, and nothing else escaped: not "/", not DEL, not non-ASCII (written as UTF-8).
_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20)} | {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')

# The standard library's C encoder with these options agrees with RFC 8785 on every value `_plain` accepts:
# - strings (RFC 8785 §3.2.2.2): with ensure_ascii=False it escapes exactly '"', '\\' and U+0000-U+001F, with
#   \b \t \n \f \r where ECMAScript has them and \u00xx in lowercase hex otherwise, and writes every other
#   character as itself (DEL, U+2028 and U+2029 included), as `_string` does; lone surrogates pass through into
#   the text and `utf8` refuses them, as `canonical_json` does;
# - literals and integers (RFC 8785 §3.2.2.1, §3.2.2.3): null, true, false and int's own decimal form, which is
#   the ECMAScript form inside I-JSON's range;
# - members (RFC 8785 §3.2.3): sort_keys sorts by code point, which is UTF-16 code-unit order as long as no
#   member name holds a character above U+FFFF (`_member_names`);
# - no whitespace (RFC 8785 §3.2.1): the separators.
# check_circular is off because `_plain` bounds the depth; allow_nan is moot, as floats are not plain.
_PLAIN_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False, allow_nan=False
)
_INVALID_UNICODE = "strings must be valid Unicode, without lone surrogates (RFC 7493 §2.1)"


def canonical_json(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of `value`.

    Accepts None, bool, int within ±(2**53 - 1), str, list and tuple, and dict with str keys. Anything else,
    floats included, raises CanonicalisationError, as do strings that are not valid Unicode (lone surrogates,
    which RFC 7493 §2.1 forbids).
    """
    try:
        text = canonical_text(value)
        if text is None:
            out: list[str] = []
            _write(value, out, 0)
            text = "".join(out)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalisationError(_INVALID_UNICODE) from None


def canonical_text(value: object) -> str | None:
    """The RFC 8785 canonical text of `value`, or None when `value` is outside the plain subset in which the
    standard library's encoder writes exactly RFC 8785's text (see `_plain`); `canonical_json` then takes the
    general path, which also gives the errors. The caller encodes the text with `utf8`, which refuses lone
    surrogates as `canonical_json` does."""
    return _PLAIN_ENCODER.encode(value) if _plain(value, 0) else None


def utf8(text: str) -> bytes:
    """`text` (from `canonical_text`) in UTF-8; CanonicalisationError for a lone surrogate (RFC 7493 §2.1)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalisationError(_INVALID_UNICODE) from None


def _plain(value: Any, depth: int) -> bool:
    """Whether `value` is built only of what `_PLAIN_ENCODER` writes exactly as `_write` would: str, None, bool,
    int within ±(2**53 - 1), list, tuple and dict with str member names none of which holds a character above
    U+FFFF, nested at most MAX_DEPTH deep. Exact types only: the two may write a subclass differently (`_write`
    writes a str subclass's own __str__ and a dict subclass's own __getitem__), so every subclass takes the
    general path."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        safe: bool = -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
        return safe
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:
        for name in value:
            if type(name) is not str or (not name.isascii() and max(name) > "\uffff"):
                return False
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return False
    for item in items:  # noqa: SIM110  # a loop: all() over a generator costs more, on every node of every entry
        if type(item) is not str and not _plain(item, depth + 1):
            return False
    return True


def _string(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is not None:
        text = text.translate(_ESCAPES)
    return f'"{text}"'


def _utf16_units(name: str) -> bytes:
    # Big-endian UTF-16 bytes compare lexicographically exactly as the code units they encode.
    return name.encode("utf-16-be")


def _member_names(value: dict[Any, Any]) -> list[str]:
    """The member names in RFC 8785 §3.2.3 order: by UTF-16 code units, not by code points."""
    try:
        joined = "".join(value)
    except TypeError:
        raise CanonicalisationError("object member names must be strings") from None
    names = sorted(value)
    # Code point order (Python's) and UTF-16 order agree unless a name holds a character above U+FFFF: its
    # surrogate pair (D800-DFFF) sorts before U+E000-U+FFFF in UTF-16 but after them by code point. Sorting
    # by UTF-16 bytes costs more than the whole rest of an entry, so it is done only when it can matter.
    if not joined.isascii() and max(joined) > "\uffff":
        names.sort(key=_utf16_units)
    return names


def _write(value: object, out: list[str], depth: int) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise CanonicalisationError(f"nested deeper than {MAX_DEPTH} levels (or cyclic)")
        separator = "{"
        for name in _member_names(value):
            out.append(f"{separator}{_string(name)}:")
            separator = ","
            _write(value[name], out, depth + 1)
        out.append("}" if value else "{}")
    # None, True and False before int: the booleans are ints in Python but literals in JSON.
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalisationError("integers must lie within ±(2**53 - 1) (RFC 7493 §2.2)")
        out.append(int.__repr__(value))  # int's own form even for subclasses such as IntEnum.
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise CanonicalisationError(f"nested deeper than {MAX_DEPTH} levels (or cyclic)")
        separator = "["
        for item in value:
            out.append(separator)
            separator = ","
            _write(item, out, depth + 1)
        out.append("]" if value else "[]")
    elif isinstance(value, float):
        raise CanonicalisationError("floats are not allowed in audit data; use integers or strings")
    else:
        raise CanonicalisationError(f"cannot canonicalise a value of type {type(value).__name__}")
