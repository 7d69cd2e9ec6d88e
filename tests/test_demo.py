"""``gxpgate demo`` as a newcomer runs it: simulators, outage, summary, verifiable files."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson

LOT_A = "(01)10614141000019(10)LOT-A1"
LOT_B = "(01)10614141000026(10)LOT-B7"


def test_demo_runs_scripted_outage_and_verifies(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "gxpgate", "demo", "--seconds", "12", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "network outage" in out
    assert "uplink.failing" in out
    assert "uplink.recovered" in out
    assert "excursion: cold-room-2" in out
    assert "device.offline device=ambient-a-probe" in out
    assert "freezer-1 OPC UA server restarts" in out
    assert "-18.0" in out or "-17.9" in out, "freezer values arrive over OPC UA"
    assert "data logger cable pulled" in out
    assert "logger_enrolled" in out
    assert "logger_clock" in out
    assert "back-filled readings" in out
    # Received at the dock door (TCP scanner), put away into cold-room-2 (serial scanner).
    assert "dock-door-1 receives" in out
    lots_line = next(line for line in out.splitlines() if "lots in cold-room-2" in line)
    assert "(10)LOT-A1" in lots_line, lots_line
    assert "(10)LOT-B7" in lots_line, lots_line
    # A case of LOT-B7 put away into ambient-a first: told live, naming lot, product, zone and
    # required profile, and put right when the case is taken on to the cold room.
    live = out.split("\nsummary\n", 1)[0]
    wrong = next(line for line in live.splitlines() if "⚠ wrong zone" in line)
    for named in (LOT_B, "Insulin B", "ambient-a", "requires refrigerated"):
        assert named in wrong, wrong
    assert live.index("⚠ wrong zone") < live.index(f"✔ wrong zone put right: Insulin B lot {LOT_B}")
    # LOT-A1 waits at the dock until it has used 80 % of its (demo-sized) allowance.
    warning = next(line for line in live.splitlines() if "⚠ time out of storage" in line)
    assert LOT_A in warning, warning
    assert "now in dock-1 — warning" in warning, warning
    assert live.index("⚠ time out of storage") < live.index("LOT-A1's cases are put away")
    # The excursion alarms (naming the lots put away there), is acknowledged through the
    # control socket, and clears.
    assert "acknowledged by demo.qa" in out
    summary = out.split("\nsummary\n", 1)[1]
    alarm = next(
        line for line in summary.splitlines() if "cold-room-2-probe.temperature.high" in line
    )
    assert "active → acknowledged → cleared" in alarm, alarm
    assert "(10)LOT-B7" in alarm, alarm
    used = {line.split()[0]: line for line in summary.splitlines() if " s of " in line}
    assert set(used) == {LOT_A, LOT_B}, summary
    assert int(used[LOT_A].rsplit("(", 1)[1].split("%")[0]) >= 80, used[LOT_A]
    custody = next(line for line in summary.splitlines() if "custody exceptions" in line)
    assert "1 wrong_zone" in custody, custody
    assert f"gxpgate lots exposure '{LOT_A}' --config {workdir / 'gxpgate.toml'}" in summary
    assert "verification: PASSED" in out
    assert "quality service copy  OK" in out
    for name in ("gxpgate.toml", "signing.key", "signing.pub.pem", "buffer.db", "evidence.jsonl"):
        assert (workdir / name).is_file(), name
    assert (workdir / "signing.key").stat().st_mode & 0o777 == 0o600
    # The exceptions are on record, sealed and exported, naming the lot.
    records = [
        orjson.loads(line) for line in (workdir / "evidence.jsonl").read_bytes().splitlines()
    ]
    alarms = [r["data"] for r in records if r["kind"] == "alarm"]
    wrong_zone = [a for a in alarms if a["kind"] == "wrong_zone"]
    assert [a["state"] for a in wrong_zone] == ["active", "cleared"], wrong_zone
    detail = wrong_zone[0]["detail"]
    assert (detail["lot"], detail["product"], detail["zone"]) == (LOT_B, "Insulin B", "ambient-a")
    assert detail["required_profile"] == "refrigerated"
    tos = next(a for a in alarms if a["kind"] == "tos_warning")
    assert (tos["detail"]["lot"], tos["detail"]["zone"]) == (LOT_A, "dock-1"), tos
    assert tos["detail"]["share"] >= 0.8, tos
    check = subprocess.run(
        [sys.executable, "-m", "gxpgate", "verify", str(workdir / "evidence.jsonl"),
         "--public-key", str(workdir / "signing.pub.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    valid = subprocess.run(
        [sys.executable, "-m", "gxpgate", "config", "validate", str(workdir / "gxpgate.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    # The summary's figures are the evidence's own.
    bad = sum(1 for r in records if r["kind"] == "reading" and r["quality"] == "bad")
    assert f"bad readings          {bad} in the evidence" in summary
    # The same --workdir again: the earlier chain is not continued without being asked ...
    refused = subprocess.run(
        [sys.executable, "-m", "gxpgate", "demo", "--seconds", "3", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout
    first_chain = records[0]["chain"]
    assert f"{workdir} holds an earlier demo's chain (chain {first_chain}" in refused.stdout
    # ... and with --continue it goes on with the same chain.
    again = subprocess.run(
        [sys.executable, "-m", "gxpgate", "demo", "--seconds", "3", "--workdir", str(workdir),
         "--continue"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"continuing the chain in {workdir} (chain {first_chain}" in again.stdout
    assert f"chain {first_chain}" in again.stdout


def test_demo_refuses_a_bad_uplink_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gxpgate", "demo", "--uplink", "notaurl", "--seconds", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--uplink 'notaurl' must be an http:// or https:// URL" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_demo_cut_short_by_ctrl_c_says_so(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "demo", "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # until the live view has shown a few seconds
        seen.append(line)
        if line.strip().startswith("3s"):
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out
    assert "interrupted by Ctrl-C after" in out
    assert "verification: PASSED (of a run interrupted after" in out
