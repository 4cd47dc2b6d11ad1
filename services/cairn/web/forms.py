"""Numbers from console forms, read as strictly as the API reads its JSON fields (pure).

A browser sends every form field as text. A whole number is ASCII digits only (str.isdigit would
take "²" or "٣", which int() then refuses with a 500); a decimal is digits with at most one point.
A field that is no such number is a ValidationError naming it (400), like the API's schema errors;
whether the number makes sense (ranges, the node's memory) stays with the services, as for the API.
An empty field takes the form's default.
"""

from __future__ import annotations

import re
from typing import Mapping, NoReturn

from cairn.errors import ValidationError

_WHOLE = re.compile(r"[0-9]{1,15}")
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?|\.[0-9]{1,15}")


def whole_number(form: Mapping[str, str], name: str, default: int) -> int:
    value = form.get(name, "").strip()
    if not value:
        return default
    if not _WHOLE.fullmatch(value):
        raise_invalid(name, "must be a whole number (digits 0-9)")
    return int(value)


def decimal_number(form: Mapping[str, str], name: str) -> float | None:
    value = form.get(name, "").strip()
    if not value:
        return None
    if not _DECIMAL.fullmatch(value):
        raise_invalid(name, "must be a number (digits 0-9, at most one decimal point)")
    return float(value)


def raise_invalid(name: str, problem: str) -> NoReturn:
    raise ValidationError({name: problem})
