"""The units a point may carry: UCUM codes (CONTRACT §1), checked when the config is loaded.

The unit decides which rules watch a point (``Cel`` temperature, ``%`` humidity), so a unit
written the way a label prints it (``°C``) would leave a cold room unmonitored. Common
spellings are not quietly rewritten (the sealed record must carry the code the config says):
they are refused with the code to write instead.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

__all__ = ["UCUM_UNITS", "Unit", "check_unit"]

UCUM_UNITS: dict[str, str] = {
    "Cel": "degree Celsius",
    "K": "kelvin",
    "[degF]": "degree Fahrenheit",
    "%": "percent (relative humidity)",
    "hPa": "hectopascal",
    "kPa": "kilopascal",
    "Pa": "pascal",
    "[ppm]": "parts per million",
    "lx": "lux",
    "s": "second",
    "min": "minute",
    "h": "hour",
    "1": "dimensionless (door contacts, counts)",
}

_SPELLINGS = {
    "Cel": ("°C", "℃", "C", "degC", "deg C", "celsius", "Celsius", "cel", "CEL"),
    "[degF]": ("°F", "℉", "F", "degF", "fahrenheit"),
    "%": ("%RH", "% RH", "RH", "%rh", "percent"),
    "hPa": ("mbar", "HPA", "hpa"),
    "[ppm]": ("ppm",),
}
_CODE_FOR = {spelling: code for code, spellings in _SPELLINGS.items() for spelling in spellings}


def check_unit(value: str) -> str:
    if value in UCUM_UNITS:
        return value
    code = _CODE_FOR.get(value.strip())
    if code is not None:
        raise ValueError(f"{value!r} is not a UCUM code: write {code!r}")
    known = ", ".join(UCUM_UNITS)
    raise ValueError(f"unit {value!r} is not one gxpgate knows; use a UCUM code: {known}")


Unit = Annotated[str, AfterValidator(check_unit)]
"""A point's unit, one of :data:`UCUM_UNITS`."""
