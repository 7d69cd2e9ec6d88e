"""The published test vectors (MKT, GS1, EPC).

The source of truth is ``../shared/testdata/vectors.json`` beside the repository; a verbatim copy
lives in ``tests/cases/vectors/`` so that a clone on its own (CI) runs every vector too.
``test_vendored_vectors_match_the_published_ones`` keeps the copy identical whenever the
published file is present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PUBLISHED = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "vectors.json"
VENDORED = Path(__file__).resolve().parent / "cases" / "vectors" / "vectors.json"


def load_vectors() -> dict[str, Any]:
    path = PUBLISHED if PUBLISHED.is_file() else VENDORED
    vectors: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return vectors
