"""The control socket over real Unix sockets: protocol, file mode, start-up checks, shutdown,
and who may use it — as a decision table and end to end with a client running as ``nobody``."""

from __future__ import annotations

import asyncio
import functools
import grp
import json
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gxpgate.agent.service import control
from gxpgate.agent.service.control import (
    MAX_REQUEST_BYTES,
    AdminGroup,
    ControlError,
    ControlServer,
    Peer,
    authorise,
    request,
    request_sync,
)

OWN_GROUP = grp.getgrgid(os.getegid()).gr_name


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory: pytest's tmp_path can exceed the 107 bytes of sun_path."""
    path = Path(tempfile.mkdtemp(prefix="gxc", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Recorder:
    """A handler that echoes requests with the peer, and keeps what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], Peer]] = []

    async def __call__(self, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        self.seen.append((message, peer))
        op = message.get("op")
        if op == "boom":
            raise RuntimeError("boom")
        if op == "unserialisable":
            return {"ok": True, "value": {1, 2}}
        if op == "unknown":
            return {"ok": False, "error": "no such alarm", "code": "unknown_alarm"}
        return {"ok": True, "echo": message, "uid": peer.uid, "user": peer.user}


async def raw_exchange(path: Path, payload: bytes, answers: int) -> list[dict[str, Any]]:
    """Write ``payload`` as it is, end the sending side, and read ``answers`` answer lines."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(5):
            return [json.loads(await reader.readuntil(b"\n")) for _ in range(answers)]
    finally:
        writer.close()
        await writer.wait_closed()


# -- protocol -----------------------------------------------------------------------------------


def test_round_trip_hands_the_handler_the_peer(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    handler = Recorder()

    async def main() -> None:
        async with ControlServer(path, handler):
            answer = await request(path, {"op": "ack", "alarm": "A-1", "by": "jd"})
            assert answer == {
                "ok": True,
                "echo": {"op": "ack", "alarm": "A-1", "by": "jd"},
                "uid": os.geteuid(),
                "user": pwd.getpwuid(os.geteuid()).pw_name,
            }
            unknown = await request(path, {"op": "unknown"})  # the handler's own error: as is
            assert unknown == {"ok": False, "error": "no such alarm", "code": "unknown_alarm"}
        assert not path.exists()

    asyncio.run(main())
    _, peer = handler.seen[0]
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.geteuid(), os.getegid())
    assert peer.user == pwd.getpwuid(os.geteuid()).pw_name
    assert set(peer.groups) == set(os.getgroups())


def test_requests_on_one_connection_in_order_blank_lines_ignored_last_newline_optional(
    sock_dir: Path,
) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder()):
            answers = await raw_exchange(path, b'{"n":1}\n\n{"n":2}\n{"n":3}', 3)
            assert [a["echo"]["n"] for a in answers] == [1, 2, 3]

    asyncio.run(main())


def test_connections_are_served_concurrently(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    second = asyncio.Event()

    async def handler(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        if message["op"] == "first":
            await second.wait()
        else:
            second.set()
        return {"ok": True, "op": message["op"]}

    async def main() -> None:
        async with ControlServer(path, handler):
            first = asyncio.create_task(request(path, {"op": "first"}, timeout=5))
            answer = await request(path, {"op": "second"}, timeout=5)
            assert answer["op"] == "second"
            assert (await first)["op"] == "first"

    asyncio.run(main())


def test_request_sync_from_a_thread(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder()):
            answer = await asyncio.to_thread(request_sync, path, {"op": "ping"})
            assert answer["echo"] == {"op": "ping"}

    asyncio.run(main())


def test_malformed_requests_are_answered_and_the_connection_goes_on(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    handler = Recorder()

    async def main() -> None:
        async with ControlServer(path, handler):
            payload = b'{not json\n[1, 2]\n\xff\xfe\n{"op": "ping"}\n'
            bad_json, not_object, not_utf8, good = await raw_exchange(path, payload, 4)
            assert bad_json["ok"] is False
            assert bad_json["code"] == "bad_request"
            assert bad_json["error"].startswith("malformed JSON: ")
            assert not_object == {
                "ok": False,
                "error": "a request must be a JSON object",
                "code": "bad_request",
            }
            assert not_utf8["code"] == "bad_request"
            assert good["echo"] == {"op": "ping"}

    asyncio.run(main())
    assert [m for m, _ in handler.seen] == [{"op": "ping"}]


def test_an_oversized_request_is_refused_and_the_server_goes_on(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    handler = Recorder()

    async def main() -> None:
        async with ControlServer(path, handler):
            huge = b'{"blob": "' + b"x" * (4 * MAX_REQUEST_BYTES) + b'"}\n'
            too_large, good = await raw_exchange(path, huge + b'{"op": "after"}\n', 2)
            assert too_large == {
                "ok": False,
                "error": f"request longer than {MAX_REQUEST_BYTES} bytes",
                "code": "too_large",
            }
            assert good["echo"] == {"op": "after"}
            with pytest.raises(ControlError, match=f"longer than {MAX_REQUEST_BYTES} bytes"):
                await request(path, {"blob": "x" * (MAX_REQUEST_BYTES + 1)})
            assert (await request(path, {"op": "still"}))["ok"] is True

    asyncio.run(main())
    assert [m for m, _ in handler.seen] == [{"op": "after"}, {"op": "still"}]


def test_a_handler_failure_is_answered_logged_and_survived(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder()):
            (boom,) = await raw_exchange(path, b'{"op": "boom"}\n', 1)
            assert boom == {
                "ok": False,
                "error": "internal error: RuntimeError: boom",
                "code": "internal",
            }
            with pytest.raises(ControlError, match="internal error: RuntimeError: boom"):
                await request(path, {"op": "boom"})
            with pytest.raises(ControlError, match="internal error: TypeError"):
                await request(path, {"op": "unserialisable"})
            assert (await request(path, {"op": "ping"}))["ok"] is True

    asyncio.run(main())
    failures = [r for r in caplog.records if r.getMessage().startswith("control.handler_failed")]
    assert len(failures) == 3
    assert failures[0].exc_info is not None
    assert "op=boom" in failures[0].getMessage()


# -- the socket file and start-up ---------------------------------------------------------------


def test_socket_mode_0660_and_group(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder(), group=OWN_GROUP):
            st = os.lstat(path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o660
            assert st.st_gid == grp.getgrnam(OWN_GROUP).gr_gid
            assert st.st_uid == os.geteuid()

    old = os.umask(0)  # the mode must not depend on the umask
    try:
        asyncio.run(main())
    finally:
        os.umask(old)


def test_a_missing_parent_directory_is_created_0750_for_the_group(sock_dir: Path) -> None:
    path = sock_dir / "run" / "c.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder(), group=OWN_GROUP):
            st = os.stat(path.parent)
            assert stat.S_IMODE(st.st_mode) == 0o750
            assert st.st_gid == grp.getgrnam(OWN_GROUP).gr_gid
            assert (await request(path, {}))["ok"] is True

    asyncio.run(main())


def test_a_second_server_on_the_same_path_is_refused(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder()):
            with pytest.raises(ControlError, match="another gxpgate is running"):
                async with ControlServer(path, Recorder()):
                    pass
            assert path.exists()
            assert (await request(path, {"op": "first"}))["echo"] == {"op": "first"}

    asyncio.run(main())


def test_a_stale_socket_file_is_replaced(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gxpgate.agent.service.control")
    path = sock_dir / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # as a crashed daemon leaves it: bound, nobody listening
    dead.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)

    async def main() -> None:
        with pytest.raises(ControlError, match=r"not running \(nothing listens"):
            await request(path, {})
        async with ControlServer(path, Recorder()):
            assert (await request(path, {"op": "x"}))["ok"] is True

    asyncio.run(main())
    assert any("control.stale_socket_removed" in r.getMessage() for r in caplog.records)


def test_a_file_that_is_not_a_socket_is_left_alone(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    path.write_text("keep me", encoding="utf-8")

    async def main() -> None:
        with pytest.raises(ControlError, match="exists and is not a socket"):
            async with ControlServer(path, Recorder()):
                pass

    asyncio.run(main())
    assert path.read_text(encoding="utf-8") == "keep me"


def test_leaving_does_not_remove_a_socket_file_that_is_no_longer_ours(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        async with ControlServer(path, Recorder()):
            path.unlink()
            path.write_text("someone else's", encoding="utf-8")

    asyncio.run(main())
    assert path.read_text(encoding="utf-8") == "someone else's"


def test_an_unknown_group_is_a_clear_error(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        with pytest.raises(ControlError, match="group 'gxpgate-no-such-group' does not exist"):
            async with ControlServer(path, Recorder(), group="gxpgate-no-such-group"):
                pass

    asyncio.run(main())
    assert not path.exists()


def test_socket_path_length_limit(sock_dir: Path) -> None:
    fits = sock_dir / ("f" * (107 - len(os.fsencode(sock_dir)) - 1))
    assert len(os.fsencode(fits)) == 107
    too_long = sock_dir / ("t" * (108 - len(os.fsencode(sock_dir)) - 1))

    async def main() -> None:
        async with ControlServer(fits, Recorder()):
            assert (await request(fits, {}))["ok"] is True
        with pytest.raises(ControlError, match=r"108 bytes, longer than .* \(107 bytes\)"):
            async with ControlServer(too_long, Recorder()):
                pass
        with pytest.raises(ControlError, match="longer than a Unix socket path may be"):
            await request(too_long, {})

    asyncio.run(main())


# -- the client's errors ------------------------------------------------------------------------


def test_client_errors_say_what_is_wrong(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    release = asyncio.Event()

    async def stuck(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        await release.wait()
        return {"ok": True}

    async def main() -> None:
        with pytest.raises(ControlError) as missing:
            await request(path, {})
        assert str(missing.value) == f"gxpgate is not running (no control socket at {path})"
        async with ControlServer(path, stuck):
            with pytest.raises(ControlError, match=r"did not answer within 0\.2 s on "):
                await request(path, {}, timeout=0.2)
            release.set()  # the late answer goes to a closed connection: no harm done
            assert (await request(path, {}))["ok"] is True

    asyncio.run(main())


def test_a_malformed_answer_is_an_error(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"

    async def main() -> None:
        async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            await reader.readuntil(b"\n")
            writer.write(b"<html>\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(answer_garbage, path=str(path))
        async with server:
            with pytest.raises(ControlError, match="malformed answer"):
                await request(path, {})

    asyncio.run(main())


# -- shutdown -----------------------------------------------------------------------------------


def test_leaving_waits_for_requests_in_flight_and_drops_idle_connections(
    sock_dir: Path,
) -> None:
    path = sock_dir / "c.sock"
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {"ok": True, "done": True}

    async def serve(ready: asyncio.Event, stop: asyncio.Event) -> None:
        async with ControlServer(path, slow, shutdown_timeout_secs=30):
            ready.set()
            await stop.wait()

    async def main() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(serve(ready, stop))
        await ready.wait()
        idle_reader, idle_writer = await asyncio.open_unix_connection(path)
        in_flight = asyncio.create_task(request(path, {"op": "slow"}))
        await entered.wait()
        stop.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not path.exists()  # no new clients
        assert not serving.done()  # waits for the request in flight
        async with asyncio.timeout(5):
            assert await idle_reader.read() == b""  # the idle connection is closed
        release.set()
        assert await in_flight == {"ok": True, "done": True}
        async with asyncio.timeout(5):
            await serving
        idle_writer.close()
        await idle_writer.wait_closed()

    asyncio.run(main())


# -- who may use it -----------------------------------------------------------------------------

ADMINS = AdminGroup(name="gxpadm", gid=990, members=frozenset({"alice"}))


@pytest.mark.parametrize(
    ("peer", "group", "allowed"),
    [
        (Peer(pid=1, uid=0, gid=0, user="root"), None, True),
        (Peer(pid=1, uid=0, gid=0, user="root"), ADMINS, True),
        (Peer(pid=1, uid=500, gid=500, user="gxpgate"), None, True),  # the daemon's own uid
        (Peer(pid=1, uid=1001, gid=1001, user="bob"), None, False),
        (Peer(pid=1, uid=1001, gid=990, user="bob"), ADMINS, True),  # primary group
        (Peer(pid=1, uid=1001, gid=1001, user="bob", groups=(20, 990)), ADMINS, True),
        (Peer(pid=1, uid=1002, gid=1002, user="alice"), ADMINS, True),  # listed member
        (Peer(pid=1, uid=1001, gid=1001, user="bob", groups=(20,)), ADMINS, False),
        (Peer(pid=1, uid=1003, gid=1003, user=None), ADMINS, False),
    ],
)
def test_authorise(peer: Peer, group: AdminGroup | None, allowed: bool) -> None:
    refusal = authorise(peer, own_uid=500, group=group)
    assert (refusal is None) is allowed
    if not allowed:
        assert f"uid {peer.uid} ({peer.user or 'no user name'}) is not root" in str(refusal)
        if group is not None:
            assert "admin group (gxpadm)" in str(refusal)


_CHILD = """
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("control", sys.argv[1])
control = importlib.util.module_from_spec(spec)
sys.modules["control"] = control
spec.loader.exec_module(control)
try:
    print(json.dumps({"answer": control.request_sync(Path(sys.argv[2]), {"op": "as-other"})}))
except control.ControlError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _runnable_by_others(path: Path) -> bool:
    """Whether a non-root user without our groups can execute ``path``."""
    path = path.resolve()
    if not os.stat(path).st_mode & stat.S_IXOTH:
        return False
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in path.parents)


@functools.cache
def _python_for_nobody() -> str | None:
    """A Python ≥ 3.11 that ``nobody`` can run (the venv's may live under /root)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]
    for candidate in filter(None, candidates):
        if not Path(candidate).exists() or not _runnable_by_others(Path(candidate)):
            continue
        check = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info >= (3, 11)"],
            user="nobody",
            extra_groups=[],
            cwd="/",
            capture_output=True,
            timeout=30,
            check=False,
        )
        if check.returncode == 0:
            return candidate
    return None


def _need_nobody(sock_dir: Path) -> tuple[str, pwd.struct_passwd]:
    """Skip unless a client can run as ``nobody``; open ``sock_dir`` to it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the client as another user (CI runs as root)")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run the client as")
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python >= 3.11 that user 'nobody' may execute")
    module = sock_dir / "control_copy.py"  # the checkout may not be readable by nobody
    shutil.copyfile(control.__file__, module)
    os.chmod(module, 0o644)
    os.chmod(sock_dir, 0o755)
    return python, nobody


async def _request_as(
    python: str, sock_dir: Path, path: Path, *, user: str, group: int, extra_groups: list[int]
) -> dict[str, Any]:
    """Run :func:`request_sync` in a child process as ``user`` and return what it got."""
    child = await asyncio.create_subprocess_exec(
        python,
        "-c",
        _CHILD,
        str(sock_dir / "control_copy.py"),
        str(path),
        user=user,
        group=group,
        extra_groups=extra_groups,
        cwd=sock_dir,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def test_as_nobody_without_the_group_the_kernel_refuses_the_connection(sock_dir: Path) -> None:
    python, nobody = _need_nobody(sock_dir)
    path = sock_dir / "c.sock"
    handler = Recorder()

    async def main() -> dict[str, Any]:
        async with ControlServer(path, handler, group=OWN_GROUP):
            return await _request_as(
                python, sock_dir, path, user="nobody", group=nobody.pw_gid, extra_groups=[]
            )

    result = asyncio.run(main())
    assert result["error"].startswith(
        f"permission denied on {path}: the user must be in the gateway's admin group "
        f"({OWN_GROUP}); add them with `usermod -aG {OWN_GROUP} USER`"
    )
    assert handler.seen == []


def test_as_nobody_with_a_loosened_mode_the_server_refuses_and_logs_it(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    python, nobody = _need_nobody(sock_dir)
    path = sock_dir / "c.sock"
    handler = Recorder()

    async def main() -> dict[str, Any]:
        async with ControlServer(path, handler, group=OWN_GROUP):
            os.chmod(path, 0o666)  # a mistake the file mode alone would not survive
            answer = await _request_as(
                python, sock_dir, path, user="nobody", group=nobody.pw_gid, extra_groups=[]
            )
            assert (await request(path, {"op": "me"}))["ok"] is True  # still serving
            return answer

    result = asyncio.run(main())
    assert result["error"].startswith(
        f"gxpgate refused the request on {path}: not authorised: uid {nobody.pw_uid} (nobody) "
        f"is not root, not the gateway's user and not in the gateway's admin group ({OWN_GROUP})"
    )
    assert [m for m, _ in handler.seen] == [{"op": "me"}]
    refused = [r.getMessage() for r in caplog.records if "control.refused" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].startswith(f"control.refused uid={nobody.pw_uid} pid=")
    assert "user=nobody" in refused[0]


def test_as_nobody_in_the_group_by_primary_gid_the_request_is_served(sock_dir: Path) -> None:
    python, nobody = _need_nobody(sock_dir)
    path = sock_dir / "c.sock"
    handler = Recorder()
    group = grp.getgrgid(nobody.pw_gid).gr_name

    async def main() -> dict[str, Any]:
        async with ControlServer(path, handler, group=group):
            assert os.lstat(path).st_gid == nobody.pw_gid
            return await _request_as(
                python, sock_dir, path, user="nobody", group=nobody.pw_gid, extra_groups=[]
            )

    result = asyncio.run(main())
    assert result == {
        "answer": {
            "ok": True,
            "echo": {"op": "as-other"},
            "uid": nobody.pw_uid,
            "user": "nobody",
        }
    }
    _, peer = handler.seen[0]
    assert (peer.uid, peer.gid, peer.user) == (nobody.pw_uid, nobody.pw_gid, "nobody")


def test_as_nobody_in_the_group_by_supplementary_gid_the_request_is_served(
    sock_dir: Path,
) -> None:
    python, nobody = _need_nobody(sock_dir)
    path = sock_dir / "c.sock"
    handler = Recorder()
    admins = next(
        (
            g
            for g in grp.getgrall()
            if g.gr_gid not in (0, nobody.pw_gid) and "nobody" not in g.gr_mem
        ),
        None,
    )
    if admins is None:
        pytest.skip("no group besides root's and nobody's to act as the admin group")

    async def main() -> dict[str, Any]:
        async with ControlServer(path, handler, group=admins.gr_name):
            return await _request_as(
                python,
                sock_dir,
                path,
                user="nobody",
                group=nobody.pw_gid,
                extra_groups=[admins.gr_gid],
            )

    result = asyncio.run(main())
    assert result["answer"]["user"] == "nobody"
    _, peer = handler.seen[0]
    assert admins.gr_gid in peer.groups
    assert peer.gid == nobody.pw_gid
