"""Kubernetes resource quantities ("500m", "1Gi", "2e3") as exact fractions."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$")


def parse_quantity(text: str | int | float) -> Fraction:
    match = _QUANTITY.match(str(text).strip())
    if match is None or (match[3] is not None and match[3] not in _SUFFIXES):
        raise ValueError(f"not a quantity: {text!r}")
    number = Fraction(match[1])
    if match[2]:
        return number * Fraction(10) ** int(match[2][1:])
    return number * _SUFFIXES[match[3] or ""]


def ceil_ratio(value: Fraction, divisor: Fraction) -> int:
    """How the downward API reports a resource: rounded up to whole divisors."""
    return math.ceil(value / divisor)
