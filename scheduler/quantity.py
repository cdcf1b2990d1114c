"""Kubernetes resource quantities (``500m``, ``1.5``, ``128Mi``, ``1G``, ``1e3``)
parsed exactly, as the API server does, into integer millicores and bytes."""

from __future__ import annotations

import functools
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from scheduler.errors import InvalidAnnotation

_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")


def parse_quantity(text: str | int | float) -> Decimal:
    """The value of a quantity in base units (cores, bytes)."""
    if isinstance(text, int | float):
        return Decimal(str(text))
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise InvalidAnnotation(
            f"invalid quantity {text!r}: use e.g. '500m', '2', '128Mi', '1Gi', '1e3'")
    number, exponent, suffix = m.groups()
    try:
        value = Decimal(number)
        if exponent:
            value = value * (Decimal(10) ** int(exponent[1:]))
    except InvalidOperation as e:
        raise InvalidAnnotation(f"invalid quantity {text!r}") from e
    return value * _SUFFIX[suffix or ""]


@functools.lru_cache(maxsize=4096)  # a cluster uses a few dozen distinct values
def cpu_millis(text: str | int | float) -> int:
    """CPU in millicores, rounded up as the API does (``1.0001`` cores is 1001m)."""
    return int((parse_quantity(text) * 1000).to_integral_value(rounding=ROUND_CEILING))


@functools.lru_cache(maxsize=4096)
def memory_bytes(text: str | int | float) -> int:
    return int(parse_quantity(text).to_integral_value(rounding=ROUND_CEILING))
