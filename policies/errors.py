"""The policy package's one error. Raised only while loading or checking policy files; `decide` never
raises."""

from __future__ import annotations

from typing import ClassVar


class PolicyError(Exception):
    """A policy, vocabulary or decision-table file is invalid. Each line of the message names the file, the
    rule (or case) and the field, e.g. ``policies/rules/health.yaml: rule F7: fields.work_assessment: unknown
    field 'diagnosis'``; `errors` holds the lines one by one."""

    code: ClassVar[str] = "invalid_policy"

    def __init__(self, errors: list[str] | tuple[str, ...] | str) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        super().__init__("\n".join(self.errors))
