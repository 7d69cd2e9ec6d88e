"""The local control channel: how ``gxpgate alarms ack`` (and other operator commands) reach the
running daemon. A Unix domain stream socket speaking newline-delimited JSON.

Protocol
    A client connects, writes one JSON object per line (UTF-8, at most
    :data:`MAX_REQUEST_BYTES` per line) and reads one JSON object per line back, in order.
    Blank lines are ignored. Requests on one connection are handled one after another;
    connections are handled concurrently, so the handler may run concurrently with itself.
    Answers the channel itself makes are ``{"ok": false, "error": TEXT, "code": CODE}``:

    - ``not_authorised`` — the peer may not use the channel; the connection is then closed;
    - ``bad_request`` — the line is not JSON or not an object; the connection stays usable;
    - ``too_large`` — the line is longer than :data:`MAX_REQUEST_BYTES`; it is read to its end
      and dropped, so the connection stays usable;
    - ``internal`` — the handler raised (logged with its traceback) or answered something that
      is not a JSON object; the server keeps serving.

    Every other answer is the handler's, verbatim. Handlers should not use these codes.

Who may use it (two locks)
    1. The file: mode 0660, owned by the daemon's uid and the admin ``group``; a parent
       directory created here is 0750 and also given to the group. The kernel checks these on
       ``connect``.
    2. Per connection, from ``SO_PEERCRED`` (and ``SO_PEERGROUPS``): uid 0, the daemon's own
       uid, or a member of ``group`` — its gid or one of its supplementary gids is the group's,
       or its user name is listed in the group (``grp``). Without a group only uid 0 and the
       daemon's uid may. Membership is read again for every connection, so removing a user
       from the group takes effect without a restart. Refusals are logged
       (``control.refused``). See :func:`authorise`.

Lifecycle
    :class:`ControlServer` is an async context manager. Entering refuses to start when another
    server answers on the path, removes a stale socket file, and only starts listening once the
    file has its mode and group, so there is no moment in which a looser mode accepts
    connections. Each connection is a task in a task group the server owns; one that sends
    nothing (or takes no answer) for 60 s is closed. Leaving stops accepting, removes the socket
    file (if it is still ours), closes idle connections, waits for requests in flight up to
    ``shutdown_timeout_secs`` and cancels the rest. A connection task failing with anything but
    a dropped connection is a bug: it cancels the task that entered and is raised on leaving.

Errors
    One class, :class:`ControlError`, for both ends: a server that cannot start (path too long
    for ``sun_path``, unknown group, another gxpgate running, a non-socket in the way) and a
    client that cannot reach the daemon, is refused, or gets a bad answer. ``OSError`` is
    translated here, once; every message says what to do.

NSS look-ups (user names, group members) can block when users come from a directory (sssd,
LDAP), so the server does them in a worker thread, once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "MAX_REQUEST_BYTES",
    "AdminGroup",
    "ControlError",
    "ControlServer",
    "Handler",
    "Peer",
    "authorise",
    "request",
    "request_sync",
]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
"""The longest request line the server reads; a longer one is answered ``too_large``."""

_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, one of them the NUL
_MAX_ANSWER_BYTES = 16 * 1024 * 1024
_IDLE_TIMEOUT_SECS = 60.0  # a connection that sends nothing (or cannot take an answer) this long
_REFUSED_LINGER_SECS = 2.0  # time a refused client gets to read its answer before the close
_PROBE_TIMEOUT_SECS = 2.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux ≥ 4.13; CPython lacks the name
_PEERGROUPS_BUFLEN = 1024  # CPython's getsockopt limit: 256 groups, else fall back to grp
_CONTROL_CODES = frozenset({"not_authorised", "bad_request", "too_large", "internal"})


class ControlError(Exception):
    """The control channel cannot be used: the server cannot start, or a client cannot reach
    the daemon, is refused, or gets an answer it cannot read. The message says what to do."""


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, from ``SO_PEERCRED`` at connect time."""

    pid: int
    uid: int
    gid: int
    user: str | None
    """The user name of ``uid`` (``pwd``), None when it has none."""
    groups: tuple[int, ...] = ()
    """Supplementary gids (``SO_PEERGROUPS``); empty when the kernel cannot tell."""

    def __str__(self) -> str:
        return f"uid={self.uid} ({self.user or '?'}) pid={self.pid}"


@dataclass(frozen=True)
class AdminGroup:
    """The gateway's admin group as ``grp`` knows it now."""

    name: str
    gid: int
    members: frozenset[str]


Handler = Callable[[dict[str, Any], Peer], Awaitable[dict[str, Any]]]
"""Answers one request; gets the peer so it can record which OS user asked."""


def authorise(peer: Peer, *, own_uid: int, group: AdminGroup | None) -> str | None:
    """Why ``peer`` may not use the channel, or None when it may: it is root, the daemon's own
    user, or a member of ``group`` (gid, supplementary gid, or listed by name)."""
    if peer.uid in (0, own_uid):
        return None
    if group is not None:
        if peer.gid == group.gid or group.gid in peer.groups:
            return None
        if peer.user is not None and peer.user in group.members:
            return None
        return (
            f"uid {peer.uid} ({peer.user or 'no user name'}) is not root, not the gateway's "
            f"user and not in the gateway's admin group ({group.name})"
        )
    return (
        f"uid {peer.uid} ({peer.user or 'no user name'}) is not root and not the gateway's "
        "user (no admin group is configured)"
    )


class ControlServer:
    """Serves the control socket at ``path`` while the context is entered.

    ``handler`` is called once per request, concurrently for different connections; an
    exception from it is answered ``internal`` and logged, and does not stop the server.
    """

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        group: str | None = None,
        shutdown_timeout_secs: float = 5.0,
    ) -> None:
        self.path = path
        self.group = group
        self._handler = handler
        self._shutdown_timeout_secs = shutdown_timeout_secs
        self._own_uid = os.geteuid()
        self._gid: int | None = None
        self._server: asyncio.Server | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._tasks: asyncio.TaskGroup | None = None  # one task per connection
        self._connections: set[_Connection] = set()
        self._closing = False

    async def __aenter__(self) -> Self:
        _check_length(self.path)
        if self.group is not None:
            self._gid = _group_id(self.group)
        self._prepare_parent()
        await self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind(sock)
            sock.listen(16)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        try:
            self._server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=MAX_REQUEST_BYTES
            )
        except BaseException:
            sock.close()
            self._unlink()
            await self._tasks.__aexit__(None, None, None)
            raise
        log.info("control.listening path=%s group=%s", self.path, self.group or "-")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        self._unlink()
        for connection in self._connections:
            if not connection.busy:
                connection.writer.close()  # its read ends now; a request in flight finishes
        pending = {connection.task for connection in self._connections}
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._shutdown_timeout_secs)
            for task in late:
                log.warning("control.request_cut_short path=%s", self.path)
                task.cancel()
        if self._tasks is not None:
            # The connections are done or cancelled; the body's exception is not theirs (the
            # group would wrap it). A connection that failed (a bug here) raises from here.
            await self._tasks.__aexit__(None, None, None)
            self._tasks = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log.info("control.closed path=%s", self.path)

    # -- start-up ----------------------------------------------------------------------------

    def _prepare_parent(self) -> None:
        parent = self.path.parent
        try:
            if not parent.exists():
                parent.mkdir(parents=True)
                os.chmod(parent, 0o750)
                if self._gid is not None:
                    os.chown(parent, -1, self._gid)
                return
            if self._gid is None:
                return
            st = parent.stat()
        except OSError as exc:
            raise ControlError(
                f"cannot create the directory {parent} for the control socket: "
                f"{exc.strerror}; create it (mode 0750, group {self.group or 'root'}) or "
                "configure another control socket path"
            ) from exc
        searchable = st.st_mode & stat.S_IXOTH or (
            st.st_gid == self._gid and st.st_mode & stat.S_IXGRP
        )
        if not searchable:
            log.warning(
                "control.parent_not_searchable path=%s group=%s: members of the group cannot "
                "reach the socket; give %s to the group with mode 0750",
                parent,
                self.group,
                parent,
            )

    async def _clear_stale(self) -> None:
        """Refuse when a live server answers at the path; remove a dead socket file."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ControlError(f"cannot inspect {self.path}: {exc.strerror}") from exc
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(
                f"{self.path} exists and is not a socket; remove it or configure another "
                "control socket path"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_SECS):
                await asyncio.get_running_loop().sock_connect(probe, str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listens: a socket left behind by a crash
        except TimeoutError:
            raise ControlError(
                f"another gxpgate seems to be running: its control socket at {self.path} "
                "accepts no connection; stop it first"
            ) from None
        except OSError as exc:
            raise ControlError(
                f"cannot check whether another gxpgate runs at {self.path}: {exc.strerror}"
            ) from exc
        else:
            raise ControlError(
                f"another gxpgate is running (its control socket at {self.path} answers); "
                "stop it first"
            )
        finally:
            probe.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ControlError(
                f"cannot remove the stale control socket {self.path}: {exc.strerror}"
            ) from exc
        log.info("control.stale_socket_removed path=%s", self.path)

    def _bind(self, sock: socket.socket) -> None:
        """Bind and set mode and group before ``listen``: until then connects are refused."""
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            raise ControlError(
                f"cannot create the control socket {self.path}: {exc.strerror}; the gateway's "
                f"user needs write access to {self.path.parent}"
            ) from exc
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        os.chmod(self.path, 0o660)
        if self._gid is not None:
            try:
                os.chown(self.path, -1, self._gid)
            except OSError as exc:
                raise ControlError(
                    f"cannot give the control socket {self.path} to group {self.group}: "
                    f"{exc.strerror}; run gxpgate as root or as a member of {self.group}"
                ) from exc

    def _unlink(self) -> None:
        """Remove the socket file if it is still the one we bound."""
        if self._identity is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("control.unlink_failed path=%s error=%s", self.path, exc.strerror)
        self._identity = None

    # -- connections -------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or self._tasks is None:
            writer.close()
            return
        connection = _Connection(writer)
        connection.task = self._tasks.create_task(self._serve(reader, connection))
        self._connections.add(connection)

    async def _serve(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        writer = connection.writer
        try:
            peer, group = await self._identify(writer.get_extra_info("socket"))
            refusal = authorise(peer, own_uid=self._own_uid, group=group)
            if refusal is not None:
                await self._refuse(reader, writer, peer, refusal)
                return
            await self._converse(reader, connection, peer)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("control.connection_dropped error=%r", exc)
        finally:
            self._connections.discard(connection)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _identify(self, sock: socket.socket) -> tuple[Peer, AdminGroup | None]:
        pid, uid, gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        groups = _peer_groups(sock)
        own = uid in (0, self._own_uid)
        user, group = await asyncio.to_thread(_look_up, uid, None if own else self._gid)
        return Peer(pid=pid, uid=uid, gid=gid, user=user, groups=groups), group

    async def _refuse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
        reason: str,
    ) -> None:
        log.warning(
            "control.refused uid=%d pid=%d user=%s reason=%s",
            peer.uid,
            peer.pid,
            peer.user or "-",
            reason,
        )
        async with asyncio.timeout(_REFUSED_LINGER_SECS):
            writer.write(_line(_error("not_authorised", f"not authorised: {reason}")))
            await writer.drain()
            writer.write_eof()
            # Closing with the client's request unread would reset the connection (Linux) and
            # could cost the client the answer; wait for its close, briefly.
            while await reader.read(MAX_REQUEST_BYTES):
                pass

    async def _converse(
        self, reader: asyncio.StreamReader, connection: _Connection, peer: Peer
    ) -> None:
        while True:
            async with asyncio.timeout(_IDLE_TIMEOUT_SECS):
                line = await _read_request(reader)
            if line is None or self._closing:
                return
            if isinstance(line, bytes) and not line.strip():
                continue
            connection.busy = True
            answer = await self._answer(line, peer)
            async with asyncio.timeout(_IDLE_TIMEOUT_SECS):
                connection.writer.write(answer)
                await connection.writer.drain()
            connection.busy = False
            if self._closing:
                return

    async def _answer(self, line: bytes | _TooLarge, peer: Peer) -> bytes:
        if isinstance(line, _TooLarge):
            log.warning("control.too_large uid=%d pid=%d", peer.uid, peer.pid)
            return _line(_error("too_large", f"request longer than {MAX_REQUEST_BYTES} bytes"))
        try:
            message = json.loads(line.decode())
        except ValueError as exc:  # also a UnicodeDecodeError
            log.warning("control.bad_request uid=%d pid=%d error=%s", peer.uid, peer.pid, exc)
            return _line(_error("bad_request", f"malformed JSON: {exc}"))
        if not isinstance(message, dict):
            return _line(_error("bad_request", "a request must be a JSON object"))
        # The handler is the daemon's code; whatever it raises is answered and logged here so
        # one bad request cannot take the control channel (or the daemon) down.
        try:
            answer = await self._handler(message, peer)
            if not isinstance(answer, dict):
                raise TypeError(f"the handler answered {type(answer).__name__}, not a dict")
            return _line(answer)
        except Exception as exc:
            log.exception(
                "control.handler_failed uid=%d pid=%d op=%s",
                peer.uid,
                peer.pid,
                message.get("op", "-"),
            )
            return _line(_error("internal", f"internal error: {type(exc).__name__}: {exc}"))


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    busy: bool = False  # between reading a request and writing its answer
    task: asyncio.Task[None] = field(init=False)


class _TooLarge:
    """A request line longer than the limit, already read to its end and dropped."""


async def _read_request(reader: asyncio.StreamReader) -> bytes | _TooLarge | None:
    """The next request line, :class:`_TooLarge`, or None at the end of the stream."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None  # a last request without a newline is still a request
    except asyncio.LimitOverrunError as exc:
        consumed = exc.consumed
    while True:  # drop the rest of the long line, a buffer at a time
        await reader.readexactly(consumed)
        try:
            await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed
            continue
        return _TooLarge()


def _peer_groups(sock: socket.socket) -> tuple[int, ...]:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, _PEERGROUPS_BUFLEN)
    except OSError:  # an old kernel, or more groups than fit: grp's member list decides
        return ()
    return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def _look_up(uid: int, gid: int | None) -> tuple[str | None, AdminGroup | None]:
    """The user name of ``uid`` and the group ``gid`` now (blocking: NSS)."""
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    if gid is None:
        return user, None
    try:
        entry = grp.getgrgid(gid)
    except KeyError:  # deleted since the start: only its gid still counts
        return user, AdminGroup(name=str(gid), gid=gid, members=frozenset())
    return user, AdminGroup(name=entry.gr_name, gid=gid, members=frozenset(entry.gr_mem))


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ControlError(
            f"the control socket's group {name!r} does not exist; create it "
            f"(groupadd --system {name}) or configure another admin group"
        ) from None


def _check_length(path: Path) -> None:
    size = len(os.fsencode(path))
    if size > _SUN_PATH_MAX:
        raise ControlError(
            f"control socket path is {size} bytes, longer than a Unix socket path may be "
            f"({_SUN_PATH_MAX} bytes): {path}; configure a shorter path"
        )


def _error(code: str, text: str) -> dict[str, Any]:
    return {"ok": False, "error": text, "code": code}


def _line(message: dict[str, Any]) -> bytes:
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode() + b"\n"


# -- client -------------------------------------------------------------------------------------


async def request(
    path: Path,
    message: dict[str, Any],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (the API request_sync mirrors)
) -> dict[str, Any]:
    """Send one request to the daemon at ``path`` and return its answer within ``timeout``
    seconds.

    Handler answers are returned as they are, also ``{"ok": false, ...}`` ones; answers the
    channel itself makes (refused, malformed, too large, internal error) raise
    :class:`ControlError`, as does everything that keeps the request from being answered.
    """
    _check_length(path)
    data = _line(message)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=_MAX_ANSWER_BYTES)
            try:
                writer.write(data)
                await writer.drain()
                line = await reader.readuntil(b"\n")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise ControlError(
            f"gxpgate did not answer within {timeout:g} s on {path}; it may be stuck or "
            "overloaded: check `systemctl status gxpgate` and its log"
        ) from None
    except FileNotFoundError:
        raise ControlError(f"gxpgate is not running (no control socket at {path})") from None
    except PermissionError:
        group = _group_of(path)
        raise ControlError(
            f"permission denied on {path}: the user must be in the gateway's admin group "
            f"({group}); add them with `usermod -aG {group} USER` and log in again, "
            "or use sudo"
        ) from None
    except ConnectionRefusedError:
        raise ControlError(
            f"gxpgate is not running (nothing listens on the control socket at {path})"
        ) from None
    except asyncio.IncompleteReadError:
        raise ControlError(
            f"gxpgate closed the control connection at {path} without answering; see its log"
        ) from None
    except asyncio.LimitOverrunError:
        raise ControlError(
            f"gxpgate's answer on {path} is longer than {_MAX_ANSWER_BYTES} bytes"
        ) from None
    except ConnectionError as exc:
        raise ControlError(
            f"gxpgate dropped the control connection at {path}: {exc.strerror or exc}; see its log"
        ) from None
    except OSError as exc:
        raise ControlError(
            f"cannot reach gxpgate on {path}: {exc.strerror or exc}; check the configured "
            "control socket path"
        ) from exc
    return _read_answer(path, line)


def request_sync(path: Path, message: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """:func:`request` for synchronous callers (the CLI); not from inside an event loop."""
    return asyncio.run(request(path, message, timeout=timeout))


def _read_answer(path: Path, line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line.decode())
    except ValueError as exc:
        raise ControlError(f"gxpgate sent a malformed answer on {path}: {exc}") from exc
    if not isinstance(answer, dict):
        raise ControlError(
            f"gxpgate sent a malformed answer on {path}: {type(answer).__name__}, not an object"
        )
    code = answer.get("code")
    if answer.get("ok") is not False or code not in _CONTROL_CODES:
        return answer
    error = answer.get("error", "no reason given")
    if code == "not_authorised":
        raise ControlError(
            f"gxpgate refused the request on {path}: {error}; use sudo, or add the user to "
            f"the gateway's admin group ({_group_of(path)}) and log in again"
        )
    if code == "internal":
        raise ControlError(f"gxpgate failed on the request: {error}; see its log")
    raise ControlError(f"gxpgate rejected the request: {error}")


def _group_of(path: Path) -> str:
    """The name of the group that owns the socket (or its directory), for messages."""
    for candidate in (path, path.parent):
        try:
            gid = os.stat(candidate).st_gid
        except OSError:
            continue
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)
    return "see the gateway's configuration"
