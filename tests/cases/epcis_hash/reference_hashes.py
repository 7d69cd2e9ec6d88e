"""Adds the reference implementation's pre-hash string and hash to each line of events.jsonl.

Needs ``pip install epcis-event-hash-generator==1.9.3`` (GS1's reference implementation, MIT
licence), in a virtualenv of its own; writes ``cases.jsonl``. See README.md here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from epcis_event_hash_generator import hash_generator  # type: ignore[import-not-found]
from epcis_event_hash_generator.json_to_py import (  # type: ignore[import-not-found]
    event_list_from_epcis_document_json,
)

HERE = Path(__file__).parent


def main() -> None:
    logging.disable(logging.CRITICAL)
    lines = (HERE / "events.jsonl").read_text(encoding="utf-8").splitlines()
    with (HERE / "cases.jsonl").open("w", encoding="utf-8") as out:
        for line in lines:
            case = json.loads(line)
            event = dict(case["event"])
            context = event.pop("@context")
            document = {
                "@context": context,
                "type": "EPCISDocument",
                "schemaVersion": "2.0",
                "creationDate": "2026-11-21T10:00:00Z",
                "epcisBody": {"eventList": [event]},
            }
            events = event_list_from_epcis_document_json(document)
            pre = hash_generator.derive_prehashes_from_events(events)
            case["pre_hash"] = pre[0]
            case["hash"] = hash_generator.calculate_hashes_from_pre_hashes(pre)[0]
            out.write(json.dumps(case, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
