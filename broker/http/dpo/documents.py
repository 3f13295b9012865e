"""Downloads: a person's log report as CSV and as PDF, and the register of processing activities as CSV. Built in
the request's language, from what the use cases return.

CSV (RFC 4180: CRLF line ends, fields quoted when they hold the separator, a quote or a line break): UTF-8 with a
byte-order mark, which is how Excel recognises UTF-8 (without it, ä and ö come out garbled). The separator follows
the language: a semicolon for Finnish and Swedish, because Excel with Finnish or Swedish regional settings splits
columns on the semicolon (the comma is the decimal separator there), and a comma for English. A cell that begins
with =, +, -, @ or a tab would be read by a spreadsheet as a formula; it is written with a leading apostrophe
(OWASP, "CSV Injection").

PDF (fpdf2, pure Python): the text is set in DejaVu Sans, embedded as a subset, when the system has it — Debian's
`fonts-dejavu-core`, which most desktop and server installations carry — so that every character prints as it is.
Without it the report falls back to the PDF core font Helvetica, whose Latin-1 covers Finnish and Swedish (å, ä,
ö) and the section sign; anything else (dashes, quotes) is transliterated. No font is bundled with the broker.
"""

from __future__ import annotations

import csv
import functools
import io
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from flask_babel import gettext as _

from broker.http.dpo.labels import term
from broker.http.portal.i18n import current_language
from broker.http.portal.labels import label
from broker.services.anomalies import HELSINKI

#: Where fontconfig installs fonts on Linux (the XDG base directory for data, system and local).
FONT_DIRECTORIES = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TRANSLITERATION = str.maketrans(
    {"–": "-", "—": "-", "‐": "-", "‑": "-", "…": "...", "“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "•": "*"}
)


def local_time(value: datetime | None) -> str:
    return value.astimezone(HELSINKI).strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(header: Sequence[str], rows: Iterable[Sequence[object]], *, language: str | None = None) -> bytes:
    language = language or current_language()
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="," if language == "en" else ";", lineterminator="\r\n")
    writer.writerow([_cell(h) for h in header])
    writer.writerows([_cell(v) for v in row] for row in rows)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


# --- the person's report ----------------------------------------------------------------------------------------


def disclosure_event(row: dict[str, Any]) -> str:
    if row["effect"] == "deny":
        return term("event", "disclosure:deny")
    return term("event", "notice:send" if row["kind"] == "notice" else "disclosure:permit")


def basis_parts(row: dict[str, Any]) -> tuple[str, str, str, str]:
    """Kind (in the person's words), statute, consent id and exception of a disclosure's basis."""
    basis = row.get("basis") or {}
    if row["effect"] == "deny" or not basis:
        return (_("No basis: nothing was shared."), "", "", "")
    exception = label("exception", basis["exception_ground"]) if basis.get("exception_ground") else ""
    return (
        label("basis_kind", basis.get("kind")),
        basis.get("reference") or "",
        basis.get("consent_id") or "",
        exception,
    )


def _index(value: int | None) -> str:
    return str(value) if value is not None else _("pending")


def report_header() -> list[str]:
    return [
        _("Time"),
        _("What happened"),
        _("Organisation"),
        _("Organisation id"),
        _("Information"),
        _("Purpose"),
        _("Basis"),
        _("Statute"),
        _("Consent"),
        _("Statutory exception"),
        _("Fields disclosed"),
        _("Log index"),
    ]


def report_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in report["disclosures"]:
        kind, reference, consent, exception = basis_parts(row)
        rows.append(
            [
                local_time(row["at"]),
                disclosure_event(row),
                row["recipient_name"],
                row["recipient"],
                label("category", row["category"]),
                label("purpose", row["purpose"]),
                kind,
                reference,
                consent,
                exception,
                ", ".join(row["fields"]),
                _index(row["index"]),
            ]
        )
    for event in report["events"]:
        rows.append(
            [
                local_time(event["at"]),
                term("event", event["event"]),
                event["organisation_name"] or "",
                event["organisation"] or "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                _index(event["index"]),
            ]
        )
    return rows


def report_csv(report: dict[str, Any]) -> bytes:
    return write_csv(report_header(), report_rows(report))


@functools.cache
def unicode_font() -> dict[str, Path] | None:
    """DejaVu Sans (regular and bold) from the system's font folders, or None."""
    found: dict[str, Path] = {}
    for style, name in FONT_FILES.items():
        for directory in FONT_DIRECTORIES:
            if not directory.is_dir():
                continue
            match = next(iter(sorted(directory.rglob(name))), None)
            if match is not None:
                found[style] = match
                break
    return found if set(found) == set(FONT_FILES) else None


def latin1(text: str) -> str:
    """The text in Latin-1, for the core font: typographic marks replaced, other letters without their accents,
    anything else as '?'."""
    text = text.translate(_TRANSLITERATION)
    out = []
    for char in text:
        try:
            char.encode("latin-1")
            out.append(char)
        except UnicodeEncodeError:
            plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(plain if plain and all(ord(c) < 256 for c in plain) else "?")
    return "".join(out)


def report_pdf(report: dict[str, Any], *, fonts: dict[str, Path] | bool | None = True) -> bytes:
    """The report as a PDF (A4 landscape). `fonts`: True to look for DejaVu Sans, None for the core font, or the
    font files themselves."""
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    chosen = unicode_font() if fonts is True else (fonts or None)
    pdf = FPDF(orientation="landscape", unit="mm", format="A4")
    if chosen:
        for style, path in chosen.items():
            pdf.add_font("DejaVu", style, str(path))
        family = "DejaVu"

        def clean(text: str) -> str:
            return text

    else:
        family = "Helvetica"
        clean = latin1
    pdf.set_auto_page_break(auto=True, margin=14)
    pdf.set_margins(12, 12, 12)
    person = report["person"]
    title = _("Log report")
    pdf.set_title(clean(f"{title}: {person['name'] or person['person_id']}"))
    pdf.set_lang(current_language())
    pdf.set_creator("Consent Broker")
    pdf.add_page()
    pdf.set_font(family, "B", 16)
    pdf.multi_cell(0, 8, clean(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 10)
    lines = [
        _("Person: %(name)s (%(id)s)", name=person["name"] or "–", id=person["person_id"]),
        _("Made on %(time)s (Finnish time) by the data-protection officer.", time=local_time(report["generated_at"])),
        _period_text(report),
        _(
            "The log shows who has received or asked for the information, when, for what and on which basis "
            "(Client Data Act 703/2023 11 §). It names organisations, not their employees. Free of charge."
        ),
    ]
    for line in lines:
        pdf.multi_cell(0, 5, clean(line), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    heading = FontFace(emphasis="BOLD", fill_color=(230, 233, 236))
    pdf.set_font(family, "B", 12)
    pdf.multi_cell(0, 7, clean(_("Disclosures and refused requests")), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 8)
    if report["disclosures"]:
        header = [
            _("Time"),
            _("Organisation"),
            _("Information"),
            _("Purpose"),
            _("Result"),
            _("Basis"),
            _("Fields disclosed"),
        ]
        with pdf.table(col_widths=(22, 40, 36, 36, 28, 62, 49), headings_style=heading, text_align="LEFT") as table:
            table.row([clean(h) for h in header])
            for row in report["disclosures"]:
                kind, reference, consent, exception = basis_parts(row)
                basis = ", ".join(p for p in (kind, reference, consent, exception) if p)
                cells = [
                    local_time(row["at"]),
                    row["recipient_name"],
                    label("category", row["category"]),
                    label("purpose", row["purpose"]),
                    disclosure_event(row),
                    basis,
                    ", ".join(row["fields"]),
                ]
                table.row([clean(c) for c in cells])
    else:
        pdf.multi_cell(0, 5, clean(_("No disclosures in this period.")), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font(family, "B", 12)
    pdf.multi_cell(0, 7, clean(_("Other events about the person in the log")), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 8)
    if report["events"]:
        with pdf.table(col_widths=(30, 110, 90, 43), headings_style=heading, text_align="LEFT") as table:
            table.row([clean(h) for h in (_("Time"), _("What happened"), _("Organisation"), _("Log index"))])
            for event in report["events"]:
                cells = [
                    local_time(event["at"]),
                    term("event", event["event"]),
                    event["organisation_name"] or "",
                    _index(event["index"]),
                ]
                table.row([clean(c) for c in cells])
    else:
        pdf.multi_cell(0, 5, clean(_("No other events in this period.")), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _period_text(report: dict[str, Any]) -> str:
    if report["since"] is None:
        return _("Period: the whole log (a special reason was given for entries older than two years).")
    return _("Period: from %(since)s (the last two years).", since=local_time(report["since"]))


# --- the register ---------------------------------------------------------------------------------------------


def _org_types(values: Sequence[str], every: bool) -> str:
    return _("every organisation type") if every else ", ".join(label("org_type", v) for v in values)


def register_header() -> list[str]:
    return [
        _("Flow"),
        _("Rule"),
        _("Effect"),
        _("Recipients"),
        _("Sources"),
        _("Categories of personal data"),
        _("Special categories"),
        _("Purposes"),
        _("Basis"),
        _("Lawful basis (GDPR)"),
        _("Statute that lifts secrecy"),
        _("Retention"),
    ]


def register_rows(register: dict[str, Any], special: dict[str, bool], retention: dict[str, str]) -> list[list[str]]:
    rows = []
    for flow in register["flows"]:
        rows.append(
            [
                flow["flow"],
                flow["rule"],
                _("permit") if flow["effect"] == "permit" else _("forbid"),
                _org_types(flow["recipients"], flow["every_org_type"]),
                _org_types(flow["sources"], flow["every_source"]),
                _("every category")
                if flow["every_category"]
                else ", ".join(label("category", c) for c in flow["categories"]),
                ", ".join(label("category", c) for c in flow["categories"] if special.get(c)),
                _("any purpose") if flow["every_purpose"] else ", ".join(label("purpose", p) for p in flow["purposes"]),
                term("rule_basis", flow["basis"]) if flow["basis"] else "",
                flow["lawful_basis"] if flow["effect"] == "permit" else "",
                flow["secrecy_ground"],
                "; ".join(dict.fromkeys(retention[c] for c in flow["categories"] if retention.get(c))),
            ]
        )
    return rows


def register_csv(register: dict[str, Any], retention: dict[str, str]) -> bytes:
    special = {c["id"]: c["special"] for c in register["categories"]}
    return write_csv(register_header(), register_rows(register, special, retention))
