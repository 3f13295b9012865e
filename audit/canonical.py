"""RFC 8785 JSON Canonicalization Scheme (JCS), restricted to what audit entries need.

The leaf hash of an entry is taken over these bytes (DESIGN.md, "Audit export format"), so the same value must
give the same bytes in every implementation, today and years from now. RFC 8785 fixes that: I-JSON data
(RFC 7493), members sorted by UTF-16 code units, ECMAScript string and number serialisation, UTF-8.

Numbers are integers only. ECMAScript number serialisation of floats (RFC 8785 §3.2.2.3) is the part of JCS
that implementations most often get wrong, and the audit log has no use for fractions; refusing them keeps
every conforming verifier in agreement. Integers are held to I-JSON's exactly representable range
(RFC 7493 §2.2), inside which an integer's ECMAScript serialisation is its plain decimal form.
"""

from __future__ import annotations

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


def canonical_json(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of `value`.

    Accepts None, bool, int within ±(2**53 - 1), str, list and tuple, and dict with str keys. Anything else,
    floats included, raises CanonicalisationError, as do strings that are not valid Unicode (lone surrogates,
    which RFC 7493 §2.1 forbids).
    """
    out: list[str] = []
    try:
        _write(value, out, 0)
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalisationError("strings must be valid Unicode, without lone surrogates (RFC 7493 §2.1)") from None


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
