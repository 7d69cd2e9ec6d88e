"""``config validate`` checks what ``run`` checks, all at once, one line each, exit 2 (issue
14 item 14): the key (present, 0600), credential files (readable), the buffer's folder, and the
metrics port (free, unless the gxpgate running on this buffer holds it)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from typer.testing import CliRunner

from gxpgate.agent.cli.main import app

runner = CliRunner()


def test_every_start_problem_is_reported_in_one_pass(
    tmp_path: Path, write_config, signing_key
) -> None:
    config = write_config(url="https://quality.example.com")
    os.chmod(signing_key[0], 0o644)
    (tmp_path / "not-a-folder").write_text("")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        text = config.read_text()
        text = text.replace('path = "buffer.db"', 'path = "not-a-folder/buffer.db"')
        text = text.replace("[uplink]\n", '[uplink]\ntoken_file = "missing.token"\n')
        text = text.replace("[metrics]\n", f"[metrics]\nport = {port}\n#")
        config.write_text(text)
        result = runner.invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 4, lines
    assert "signing.key_file:" in lines[0]
    assert "mode 0644 lets other users read the signing key" in lines[0]
    assert any(
        "uplink.token_file:" in line and "missing.token is not a readable file" in line
        for line in lines
    )
    assert any("buffer.path:" in line and "not-a-folder is not a folder" in line for line in lines)
    assert any(
        f"metrics.port: 127.0.0.1:{port} is in use by another program" in line for line in lines
    )
    assert all(line.startswith(f"{config}: ") for line in lines)
    # The same problems keep `run` from starting.
    run = runner.invoke(app, ["run", "--config", str(config)])
    assert run.exit_code == 1
    assert "mode 0644" in run.output
