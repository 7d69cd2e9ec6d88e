"""Setting a damaged buffer aside, so that the next start begins a new chain that cites it.

Never automatic: the agent refuses a damaged buffer (buffer/outbox.py, "The witness") and an
operator decides, with ``gxpgate buffer reset``. Nothing is deleted: the files are renamed with
a ``.damaged-<UTC time>`` suffix for investigation, and the witness keeps which chain they held
and through which seq, so the new chain's first records say what it replaces.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from gxpgate.buffer.outbox import BufferCorrupt, read_witness

__all__ = ["set_aside"]


def set_aside(buffer: Path, companions: Sequence[Path] = ()) -> dict[str, Any]:
    """Rename ``buffer`` (with its ``-wal``/``-shm``) and ``companions`` (files derived from
    it, such as the lot register) aside; return what the new chain will cite. The caller
    holds the buffer's lock."""
    witness_path = buffer.with_name(buffer.name + ".witness")
    try:
        witness = read_witness(witness_path) or {}
    except BufferCorrupt:
        witness = {"witness_damaged": True}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved: list[str] = []
    for main in (buffer, *companions):
        for path in (main, main.with_name(main.name + "-wal"), main.with_name(main.name + "-shm")):
            if path.exists():
                target = path.with_name(f"{path.name}.damaged-{stamp}")
                path.rename(target)
                moved.append(target.name)
    previous = {
        "chain": witness.get("chain"), "last_seq": witness.get("last_seq"),
        "set_aside": moved, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    if witness.get("witness_damaged"):
        previous["witness_damaged"] = True
    witness_path.write_bytes(orjson.dumps({"chain": None, "replaced": previous}))
    return previous
