"""Keys, export and verify: tampering of any kind is caught and named by seq."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.agent.evidence import KeyFileError, key_id, load_private_key, public_key_pem

from .sealed import fill

runner = CliRunner()


def test_generate_key_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    result = runner.invoke(app, ["keys", "generate", "--out", str(out)])
    assert result.exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    kid = key_id(load_private_key(out).public_key())
    assert f"key id: {kid}" in result.output
    assert "BEGIN PUBLIC KEY" in result.output
    again = runner.invoke(app, ["keys", "generate", "--out", str(out)])
    assert again.exit_code == 1
    assert "refusing to overwrite" in again.stderr
    shown = runner.invoke(app, ["keys", "show", "--key", str(out)])
    assert shown.exit_code == 0
    assert f"key id: {kid}" in shown.output


def test_generate_writes_the_public_key_beside_and_verify_refuses_a_private_one(
    tmp_path: Path, signing_key
) -> None:
    out, _ = _export(tmp_path, signing_key)
    key = tmp_path / "gw.key"
    result = runner.invoke(app, ["keys", "generate", "--out", str(key)])
    assert result.exit_code == 0
    public = tmp_path / "gw.pub.pem"
    assert f"wrote {public}" in result.output
    assert public.read_text() == public_key_pem(load_private_key(key).public_key())
    refused = _verify(out, key)
    assert refused.exit_code == 2
    assert f"{key}: is a private key; give the public key PEM" in refused.output
    assert "gw.pub.pem" in refused.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("gxpgate ")


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    runner.invoke(app, ["keys", "generate", "--out", str(out)])
    os.chmod(out, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(out)
    result = runner.invoke(app, ["keys", "show", "--key", str(out)])
    assert result.exit_code == 2
    assert "mode 0644" in result.stderr


def _export(tmp_path: Path, signing_key, count: int = 20) -> tuple[Path, Path]:
    key_path, key = signing_key
    outbox = fill(tmp_path / "b.db", key, count)
    out = tmp_path / "evidence.jsonl"
    out.write_bytes(b"".join(body + b"\n" for body in outbox.export()))
    outbox.close()
    pub = tmp_path / "pub.pem"
    pub.write_text(
        runner.invoke(app, ["keys", "show", "--key", str(key_path)]).output.split("\n", 1)[1]
    )
    return out, pub


def _verify(out: Path, pub: Path):
    return runner.invoke(app, ["verify", str(out), "--public-key", str(pub)])


def test_untouched_export_verifies(tmp_path: Path, signing_key) -> None:
    out, pub = _export(tmp_path, signing_key)
    result = _verify(out, pub)
    assert result.exit_code == 0, result.output
    assert "OK: 20 record(s)" in result.output


@pytest.mark.parametrize("tamper", ["value", "delete", "swap", "resign-other-key", "truncate-json"])
def test_tampered_export_fails_naming_first_bad_seq(
    tmp_path: Path, signing_key, tamper: str
) -> None:
    out, pub = _export(tmp_path, signing_key)
    lines = out.read_bytes().splitlines()
    if tamper == "value":
        record = orjson.loads(lines[6])
        record["value"] = 4.0
        lines[6] = orjson.dumps(record)
        expected = "FAIL at seq 7"
    elif tamper == "delete":
        del lines[9]
        expected = "FAIL at seq 11"
    elif tamper == "swap":
        lines[3], lines[4] = lines[4], lines[3]
        expected = "FAIL at seq 5"
    elif tamper == "resign-other-key":
        record = orjson.loads(lines[2])
        record["key"] = "0123456789abcdef"
        lines[2] = orjson.dumps(record)
        expected = "FAIL at seq 3"
    else:
        lines[12] = lines[12][:40]
        expected = "FAIL at a record (line 13)"
    out.write_bytes(b"\n".join(lines) + b"\n")
    result = _verify(out, pub)
    assert result.exit_code == 1
    assert expected in result.output


def test_wrong_public_key_fails(tmp_path: Path, signing_key) -> None:
    out, _ = _export(tmp_path, signing_key)
    other = tmp_path / "other.key"
    runner.invoke(app, ["keys", "generate", "--out", str(other)])
    result = _verify(out, tmp_path / "other.pub.pem")
    assert result.exit_code == 1
    assert "FAIL at seq 1" in result.output
    assert "unknown signing key" in result.output
