"""The quality-service simulator over real HTTP on 127.0.0.1 (CONTRACT §3), no mocks."""

from __future__ import annotations

import gzip
import http.client
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.evidence import (
    GENESIS_PREV,
    RECORD_FIELDS,
    key_id,
    public_key_pem,
    record_hash,
    sign_hash,
)
from gxpgate.simulators.quality_service import QualityServiceSimulator

GW = "gw-test-1"
CHAIN = "5b0a3f0e-4d1c-4f6b-9a51-2b8f0c1d2e3f"


# -- signed records ---------------------------------------------------------------------------


def seal(private_key: Ed25519PrivateKey, record: dict[str, Any]) -> dict[str, Any]:
    """Set ``key``, ``hash`` and ``sig`` of ``record`` as the gateway would."""
    record = dict(record)
    record["key"] = key_id(private_key.public_key())
    record["hash"] = record_hash(record)
    record["sig"] = sign_hash(private_key, record["hash"])
    return record


def make_record(seq: int, prev: str, *, gw: str = GW, chain: str = CHAIN, **over: Any) -> dict:
    fields: dict[str, Any] = {
        "v": 1,
        "gw": gw,
        "chain": chain,
        "seq": seq,
        "kind": "reading",
        "at": f"2026-11-21T10:00:{seq % 60:02d}.{seq:06d}Z",
        "src_at": None,
        "zone": "cold-room-1",
        "device": "probe-1",
        "point": "temperature",
        "value": 4.0 + seq / 100,
        "unit": "Cel",
        "quality": "good",
        "data": {},
        "prev": prev,
        "hash": "",
        "key": "",
        "sig": "",
    }
    fields.update(over)
    assert tuple(fields) == RECORD_FIELDS
    return fields


def signed_chain(
    private_key: Ed25519PrivateKey,
    n: int,
    *,
    start: int = 1,
    prev: str = GENESIS_PREV,
    gw: str = GW,
    chain: str = CHAIN,
    value_offset: float = 0.0,
) -> list[dict[str, Any]]:
    records = []
    for seq in range(start, start + n):
        record = seal(
            private_key,
            make_record(seq, prev, gw=gw, chain=chain, value=4.0 + seq / 100 + value_offset),
        )
        records.append(record)
        prev = record["hash"]
    return records


def post(
    client: httpx.Client,
    records: list[dict[str, Any]],
    *,
    gw: str = GW,
    chain: str = CHAIN,
    gzipped: bool = True,
    token: str | None = None,
    idempotency_key: str | None = "auto",
    body: bytes | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if body is None:
        body = orjson.dumps({"gw": gw, "chain": chain, "records": records})
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    if idempotency_key == "auto":
        idempotency_key = f"{gw}:{chain}:{records[0]['seq']}-{records[-1]['seq']}"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/v1/evidence", content=body, headers=headers)


def http_client(sim: QualityServiceSimulator) -> httpx.Client:
    # plain HTTP to 127.0.0.1: verify=False only spares loading the CA bundle (~0.2 s a client)
    return httpx.Client(base_url=sim.url, timeout=5.0, verify=False)


def cursor(client: httpx.Client, gw: str = GW, chain: str = CHAIN, **kw: Any) -> httpx.Response:
    return client.get("/v1/evidence/cursor", params={"gw": gw, "chain": chain}, **kw)


# -- fixtures ---------------------------------------------------------------------------------


# conftest.py's autouse ``no_leftover_threads`` checks that every simulator thread is joined.


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "quality.db"


@pytest.fixture
def sim(db_path: Path, key: Ed25519PrivateKey) -> Iterator[QualityServiceSimulator]:
    with QualityServiceSimulator(db_path, [key.public_key()]) as running:
        yield running


@pytest.fixture
def client(sim: QualityServiceSimulator) -> Iterator[httpx.Client]:
    with http_client(sim) as c:
        yield c


# -- accepting evidence -----------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "identity"])
def test_good_batch_is_acked_and_stored_as_sent(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey, gzipped: bool
) -> None:
    records = signed_chain(key, 5)
    response = post(client, records, gzipped=gzipped)
    assert response.status_code == 200
    assert response.json() == {"acked_through": 5}
    assert sim.acked_through(GW, CHAIN) == 5
    assert sim.records(GW, CHAIN) == records
    assert sim.chains() == [(GW, CHAIN)]
    stats = sim.stats
    assert stats["batches"] == 1
    assert stats["records_received"] == 5
    assert stats["records_stored"] == 5
    assert stats["signatures_verified"] == 5
    assert stats["rejected_batches"] == {}
    assert sim.verification_report(GW, CHAIN) == {
        "records": 5,
        "verified_through": 5,
        "ok": True,
        "first_bad_seq": None,
        "reason": None,
    }


def test_next_batch_continues_the_chain(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 10)
    assert post(client, records[:4]).json() == {"acked_through": 4}
    assert post(client, records[4:]).json() == {"acked_through": 10}
    assert [r["seq"] for r in sim.records(GW, CHAIN)] == list(range(1, 11))


def test_resending_held_records_is_harmless(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 8)
    assert post(client, records[:5]).json() == {"acked_through": 5}
    again = post(client, records[:5])
    assert again.status_code == 200
    assert again.json() == {"acked_through": 5}
    overlapping = post(client, records[2:8])
    assert overlapping.status_code == 200
    assert overlapping.json() == {"acked_through": 8}
    assert sim.records(GW, CHAIN) == records
    assert sim.stats["duplicates"] == 5 + 3
    assert sim.stats["integrity_incidents"] == 0


def test_known_seq_with_another_hash_is_a_409_incident(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 5)
    assert post(client, records).status_code == 200
    rewritten = signed_chain(key, 5, value_offset=1.0)  # properly signed, different history
    response = post(client, rewritten[2:4])
    assert response.status_code == 409
    assert response.json()["seq"] == 3
    assert "error" in response.json()
    assert sim.records(GW, CHAIN) == records
    assert sim.stats["integrity_incidents"] == 1
    assert sim.stats["rejected_batches"] == {409: 1}


def _tamper(
    mode: str, record: dict[str, Any], key: Ed25519PrivateKey, other: Ed25519PrivateKey
) -> dict[str, Any]:
    record = dict(record)
    if mode == "value":
        record["value"] = 99.5  # hash and signature left as they were
    elif mode == "signature":
        record["sig"] = sign_hash(other, record["hash"])  # right key id, wrong key
    elif mode == "link":
        record = seal(key, {**record, "prev": "f" * 64})  # well signed, but breaks the chain
    elif mode == "unknown-key":
        record = seal(other, record)
    return record


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("value", "hash does not match"),
        ("signature", "signature does not verify"),
        ("link", "prev does not match"),
        ("unknown-key", "unknown signing key"),
    ],
)
def test_record_failing_verification_gets_422_with_valid_prefix_stored(
    sim: QualityServiceSimulator,
    client: httpx.Client,
    key: Ed25519PrivateKey,
    mode: str,
    reason: str,
) -> None:
    records = signed_chain(key, 5)
    bad = [*records[:2], _tamper(mode, records[2], key, Ed25519PrivateKey.generate()), *records[3:]]
    response = post(client, bad)
    assert response.status_code == 422
    body = response.json()
    assert body["seq"] == 3
    assert body["acked_through"] == 2
    assert reason in body["error"]
    assert sim.records(GW, CHAIN) == records[:2]
    assert sim.stats["integrity_incidents"] == 1
    # the gateway's next attempt with the genuine records completes the chain
    assert post(client, records[2:]).json() == {"acked_through": 5}


def test_batch_beyond_a_gap_is_not_stored_and_answers_the_cursor(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 8)
    assert post(client, records[:3]).json() == {"acked_through": 3}
    response = post(client, records[5:])
    assert response.status_code == 200
    assert response.json() == {"acked_through": 3}
    assert sim.acked_through(GW, CHAIN) == 3
    assert len(sim.records(GW, CHAIN)) == 3
    other = "0d9c6a4e-1111-4222-8333-444455556666"
    unknown = post(client, signed_chain(key, 2, start=4, chain=other), chain=other)
    assert unknown.json() == {"acked_through": 0}
    assert sim.chains() == [(GW, CHAIN)]


def test_cursor_endpoint(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    assert cursor(client).json() == {"acked_through": 0}
    post(client, signed_chain(key, 7))
    response = cursor(client)
    assert response.status_code == 200
    assert response.json() == {"acked_through": 7}
    assert client.get("/v1/evidence/cursor", params={"gw": GW}).status_code == 400
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/evidence").status_code == 405


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 422),
        (orjson.dumps({"gw": GW, "chain": CHAIN, "records": []}), 422),
        (orjson.dumps({"gw": GW, "records": [{"seq": 1}]}), 422),
        (orjson.dumps({"gw": GW, "chain": CHAIN, "records": [{"seq": "1"}]}), 422),
    ],
    ids=["not-json", "not-object", "no-records", "no-chain", "seq-not-int"],
)
def test_malformed_body_is_refused(
    sim: QualityServiceSimulator, client: httpx.Client, body: bytes, status: int
) -> None:
    response = post(client, [{"seq": 1}], body=body)
    assert response.status_code == status
    assert "error" in response.json()
    assert sim.chains() == []
    assert sim.stats["rejected_batches"] == {status: 1}


def test_invalid_gzip_is_a_400(client: httpx.Client) -> None:
    response = client.post(
        "/v1/evidence",
        content=b"\x1f\x8bgarbage",
        headers={"Content-Encoding": "gzip", "Idempotency-Key": f"{GW}:{CHAIN}:1-1"},
    )
    assert response.status_code == 400


def test_records_of_another_chain_or_out_of_order_are_refused(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 4)
    foreign = signed_chain(key, 4, gw="gw-other")
    mixed = post(client, [*records[:2], foreign[2]])
    assert mixed.status_code == 422
    assert mixed.json()["seq"] == 3
    swapped = [records[0], records[2], records[1]]
    assert post(client, swapped, idempotency_key=f"{GW}:{CHAIN}:1-2").status_code == 422
    assert sim.chains() == []


def test_idempotency_key_must_name_the_batch(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 3)
    assert post(client, records, idempotency_key=None).status_code == 422
    wrong = post(client, records, idempotency_key=f"{GW}:{CHAIN}:1-2")
    assert wrong.status_code == 422
    assert "Idempotency-Key" in wrong.json()["error"]
    assert sim.acked_through(GW, CHAIN) == 0
    assert post(client, records).status_code == 200


def test_bearer_token_is_required_and_never_logged(
    db_path: Path, key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gxpgate.simulators.quality_service")
    token = "s3cret-t0ken-value"
    records = signed_chain(key, 3)
    with (
        QualityServiceSimulator(db_path, [key.public_key()], token=token) as sim,
        http_client(sim) as client,
    ):
        assert post(client, records).status_code == 401
        assert post(client, records, token="wrong").status_code == 401
        assert cursor(client).status_code == 401
        assert sim.acked_through(GW, CHAIN) == 0
        assert post(client, records, token=token).json() == {"acked_through": 3}
        headers = {"Authorization": f"Bearer {token}"}
        assert cursor(client, headers=headers).json() == {"acked_through": 3}
    assert "batch" in caplog.text  # the debug line per batch is there...
    assert token not in caplog.text  # ...without the token


def test_too_many_records_is_a_413(db_path: Path, key: Ed25519PrivateKey) -> None:
    records = signed_chain(key, 11)
    with (
        QualityServiceSimulator(db_path, [key.public_key()], max_body_records=10) as sim,
        http_client(sim) as client,
    ):
        assert post(client, records).status_code == 413
        assert sim.acked_through(GW, CHAIN) == 0
        assert post(client, records[:10]).json() == {"acked_through": 10}
        assert post(client, records[10:]).json() == {"acked_through": 11}


def test_concurrent_senders_of_one_chain_store_it_once(
    sim: QualityServiceSimulator, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 50)
    batches = [records[i : i + 10] for i in range(0, 50, 10)]
    statuses: list[int] = []

    def sender() -> None:
        with http_client(sim) as client:
            statuses.extend(post(client, batch).status_code for batch in batches)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 20
    assert sim.acked_through(GW, CHAIN) == 50
    assert sim.records(GW, CHAIN) == records
    assert sim.stats["records_stored"] == 50
    assert sim.stats["integrity_incidents"] == 0


# -- key rotation and persistence -------------------------------------------------------------


def _rotation_chain(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> list[dict[str, Any]]:
    records = signed_chain(old, 2)
    rotation = seal(
        old,
        make_record(
            3,
            records[-1]["hash"],
            kind="audit",
            zone=None,
            device=None,
            point=None,
            value=None,
            unit=None,
            quality=None,
            data={
                "event": "key_rotated",
                "new_key": key_id(new.public_key()),
                "public_key": public_key_pem(new.public_key()),
            },
        ),
    )
    records.append(rotation)
    records += signed_chain(new, 2, start=4, prev=rotation["hash"])
    return records


def test_key_rotation_is_followed_and_the_new_key_persists(
    db_path: Path, key: Ed25519PrivateKey
) -> None:
    new_key = Ed25519PrivateKey.generate()
    records = _rotation_chain(key, new_key)
    before_rotation = seal(new_key, make_record(1, GENESIS_PREV, chain="early"))
    with (
        QualityServiceSimulator(db_path, [key.public_key()]) as sim,
        http_client(sim) as client,
    ):
        early = post(client, [before_rotation], chain="early")
        assert early.status_code == 422
        assert "unknown signing key" in early.json()["error"]
        assert post(client, records).json() == {"acked_through": 5}
    # a new instance, told no keys at all, knows both from the database
    more = signed_chain(new_key, 1, start=6, prev=records[-1]["hash"])
    with (
        QualityServiceSimulator(db_path) as sim,
        http_client(sim) as client,
    ):
        assert post(client, more).json() == {"acked_through": 6}
        assert sim.records(GW, CHAIN) == records + more


def test_restart_keeps_state_and_port(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey, db_path: Path
) -> None:
    records = signed_chain(key, 6)
    post(client, records[:3])
    port = sim.port
    sim.restart()
    assert sim.port == port
    assert cursor(client).json() == {"acked_through": 3}
    assert post(client, records[3:]).json() == {"acked_through": 6}
    sim.stop()
    assert sim.records(GW, CHAIN) == records  # readable while stopped
    with QualityServiceSimulator(db_path) as fresh:
        assert fresh.acked_through(GW, CHAIN) == 6
        assert fresh.records(GW, CHAIN) == records
        assert fresh.verification_report(GW, CHAIN)["ok"] is True


# -- fault injection --------------------------------------------------------------------------


def test_fail_next_503_then_recovers(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 3)
    sim.fail_next(503, count=2)
    assert post(client, records).status_code == 503
    assert cursor(client).status_code == 503
    assert sim.acked_through(GW, CHAIN) == 0
    assert post(client, records).json() == {"acked_through": 3}
    assert sim.stats["faults_injected"] == 2


def test_fail_next_429_with_retry_after_header(
    sim: QualityServiceSimulator, client: httpx.Client
) -> None:
    sim.fail_next(429, retry_after=2)
    limited = cursor(client)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    sim.fail_next(503, retry_after=0.25)
    assert cursor(client).headers["Retry-After"] == "0.25"
    plain = cursor(client)
    assert plain.status_code == 200
    assert "Retry-After" not in plain.headers


def test_outage_refuses_connections_then_reopens_on_the_same_port(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 4)
    post(client, records[:2])
    port = sim.port
    live = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        live.request("GET", f"/v1/evidence/cursor?gw={GW}&chain={CHAIN}")
        assert live.getresponse().read() == b'{"acked_through":2}'  # kept alive, idle now
        sim.outage_start()
        assert live.sock is not None
        assert live.sock.recv(1) == b""  # the outage closed the live connection
    finally:
        live.close()
    with pytest.raises(httpx.ConnectError):
        cursor(client)
    sim.outage_end()
    assert sim.port == port
    assert post(client, records[2:]).json() == {"acked_through": 4}


def test_timed_outage_ends_by_itself(sim: QualityServiceSimulator, client: httpx.Client) -> None:
    started = time.monotonic()
    sim.outage(0.3)
    with pytest.raises(httpx.ConnectError):
        cursor(client)
    deadline = started + 5
    while True:
        try:
            response = cursor(client)
            break
        except httpx.ConnectError:
            assert time.monotonic() < deadline, "the simulator did not come back"
            time.sleep(0.02)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_drop_next_closes_without_an_answer(
    sim: QualityServiceSimulator, client: httpx.Client, key: Ed25519PrivateKey
) -> None:
    records = signed_chain(key, 2)
    sim.drop_next()
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, records)
    assert sim.acked_through(GW, CHAIN) == 0
    assert post(client, records).json() == {"acked_through": 2}


def test_set_delay_slows_answers(sim: QualityServiceSimulator, client: httpx.Client) -> None:
    sim.set_delay(0.25)
    started = time.monotonic()
    assert cursor(client).status_code == 200
    assert time.monotonic() - started >= 0.25
    sim.set_delay(0)
    started = time.monotonic()
    assert cursor(client).status_code == 200
    assert time.monotonic() - started < 0.25


# -- deferred signature verification ----------------------------------------------------------


def test_deferred_mode_acks_first_and_flags_a_bad_signature_later(
    db_path: Path, key: Ed25519PrivateKey
) -> None:
    good_chain = "11111111-2222-4333-8444-555555555555"
    good = signed_chain(key, 60, chain=good_chain)
    records = signed_chain(key, 60)
    records[40] = {
        **records[40],
        "sig": sign_hash(Ed25519PrivateKey.generate(), records[40]["hash"]),
    }
    third_chain = "99999999-8888-4777-8666-555555555555"
    third = signed_chain(key, 3, chain=third_chain)
    tampered = [*third[:2], {**third[2], "value": 1.5}]
    with (
        QualityServiceSimulator(db_path, [key.public_key()], verify_signatures="deferred") as sim,
        http_client(sim) as client,
    ):
        assert post(client, good, chain=good_chain).json() == {"acked_through": 60}
        assert post(client, records).json() == {"acked_through": 60}  # acked before the check
        rejected = post(client, tampered, chain=third_chain)  # hashes are still checked inline
        assert rejected.status_code == 422
        assert rejected.json()["seq"] == 3
        assert sim.wait_signatures_verified(timeout=5)
        assert sim.verification_report(GW, good_chain) == {
            "records": 60,
            "verified_through": 60,
            "ok": True,
            "first_bad_seq": None,
            "reason": None,
        }
        report = sim.verification_report(GW, CHAIN)
        assert report["ok"] is False
        assert report["first_bad_seq"] == 41
        assert report["verified_through"] == 40
        assert "signature does not verify" in report["reason"]
        assert sim.stats["signatures_verified"] == 60 + 40 + 2
        assert sim.stats["integrity_incidents"] == 2  # the bad signature and the inline 422
    with QualityServiceSimulator(db_path) as again:  # the verdict is stored
        assert again.verification_report(GW, CHAIN)["first_bad_seq"] == 41
