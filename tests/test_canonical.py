"""The fast canonical path must be byte-identical to the RFC 8785 reference serialiser."""

from __future__ import annotations

import math

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gxpgate.agent.evidence import canonical_bytes

SAFE = 2**53 - 1
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE, max_value=SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)
records = st.dictionaries(st.text(min_size=1), json_values, max_size=20)


@settings(max_examples=300, deadline=None)
@given(records)
def test_fast_path_equals_reference(record: dict) -> None:
    unsigned = {k: v for k, v in record.items() if k not in ("hash", "sig")}
    assert canonical_bytes(record) == rfc8785.dumps(unsigned)


@settings(max_examples=5000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_double_formats_as_ecmascript(value: float) -> None:
    assert canonical_bytes({"value": value}) == rfc8785.dumps({"value": value})


@settings(max_examples=5000, deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e15, exclude_max=True))
def test_fast_path_domain_formats_as_ecmascript(value: float) -> None:
    # The domain the fast path claims; if orjson ever changed its formatting here, this fails.
    assert canonical_bytes({"value": value}) == rfc8785.dumps({"value": value})
    assert canonical_bytes({"value": -value}) == rfc8785.dumps({"value": -value})


def test_hash_and_sig_are_excluded_and_keys_sorted() -> None:
    record = {"seq": 1, "hash": "x", "sig": "y", "b": 100.0, "a": -0.0, "c": "é\n"}
    assert canonical_bytes(record) == b'{"a":0,"b":100,"c":"\xc3\xa9\\n","seq":1}'


def test_outside_fast_path_falls_back_to_reference() -> None:
    # Keys beyond the BMP sort differently in UTF-8 and UTF-16; large integral floats print
    # differently in orjson. Both must take the reference path.
    record = {"\U0001f600": 1, "\ue000": 2, "big": 1e22, "x": math.pi}
    assert canonical_bytes(record) == rfc8785.dumps(record)
