"""The vendored copy of the published vectors is the published file, byte for byte."""

from __future__ import annotations

import pytest

from .vectors import PUBLISHED, VENDORED


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="../shared is not beside this clone")
def test_vendored_vectors_match_the_published_ones() -> None:
    assert VENDORED.read_bytes() == PUBLISHED.read_bytes()


def test_the_vendored_vectors_are_there() -> None:
    assert VENDORED.is_file(), "tests/cases/vectors/vectors.json is part of the repository"
