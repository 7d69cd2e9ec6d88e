"""``status`` says what is true (issue 14 item 16): whether gxpgate runs is the buffer lock's
word, not a guess from the metrics port, which another program may hold; sizes are MiB, as
``quota_mb`` is."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.buffer import Outbox

from .running import GW

runner = CliRunner()


class _NotGxpgate(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_status_says_another_program_holds_the_metrics_port(tmp_path: Path, write_config) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotGxpgate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = write_config(metrics=f"port = {server.server_address[1]}")
        Outbox(tmp_path / "buffer.db", GW).close()
        result = runner.invoke(app, ["status", "--config", str(config)])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.exit_code == 1
    assert f"gxpgate is not running on {tmp_path / 'buffer.db'}" in result.stderr
    assert "something else answers at http://127.0.0.1:" in result.stderr
    assert "HTTP 404" in result.stderr


def test_buffer_status_speaks_mib_as_the_quota_does(tmp_path: Path, write_config) -> None:
    config = write_config()
    config.write_text(config.read_text().replace("[buffer]\n", "[buffer]\nquota_mb = 3\n", 1))
    Outbox(tmp_path / "buffer.db", GW).close()
    result = runner.invoke(app, ["buffer", "status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "MiB of 3 MiB" in result.output
