"""``gxpgate buffer``: the local evidence buffer (CONTRACT §5)."""

from __future__ import annotations

from typing import Annotated

import typer

from gxpgate.agent.cli.common import ConfigOption, fail, load

__all__ = ["app", "buffer_reset", "buffer_status"]

app = typer.Typer(help="The local evidence buffer.", no_args_is_help=True, add_completion=False)


@app.command("reset")
def buffer_reset(
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do it (nothing is deleted)")] = False,
) -> None:
    """Set a damaged buffer aside: its files are renamed *.damaged-<time>, and the next start
    begins a new chain whose first records cite the one set aside."""
    from gxpgate.agent.custody.lots import lots_path_for
    from gxpgate.buffer import BufferLock, BufferLocked
    from gxpgate.buffer.reset import set_aside

    loaded = load(config)
    path = loaded.config.buffer.path
    if not yes:
        fail(
            f"this renames {path} (and its -wal, -shm and the lot register beside it) aside and "
            "lets the next start begin a new chain; the quality service then holds two chains "
            "for this gateway. Add --yes to do it.",
            2,
        )
    try:
        with BufferLock(path):
            previous = set_aside(path, [lots_path_for(path)])
    except BufferLocked as exc:
        fail(str(exc), 2)
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    for name in previous["set_aside"]:
        typer.echo(f"set aside: {path.parent / name}")
    typer.echo(
        f"the next start begins a new chain citing chain {previous['chain'] or 'unknown'} "
        f"(through seq {previous['last_seq'] if previous['last_seq'] is not None else '?'})"
    )


@app.command("status")
def buffer_status(config: ConfigOption = None) -> None:
    """Records held, pending upload, oldest pending, acked through, disk use."""
    from gxpgate.agent.service.runtime import AgentStartError, open_outbox

    loaded = load(config)
    try:
        outbox = open_outbox(loaded, must_exist=True)
    except AgentStartError as exc:
        fail(str(exc))
    try:
        st = outbox.status()
    finally:
        outbox.close()
    share = 100 * st.disk_bytes / st.quota_bytes
    rows = [
        ("buffer", str(outbox.path)),
        ("gateway", st.gw),
        ("chain", st.chain),
        ("records held", f"{st.records}"),
        ("last seq", f"{st.last_seq}"),
        ("acked through", f"{st.acked_through}"),
        ("pending upload", f"{st.pending}"),
        ("oldest pending", st.oldest_pending_at or "-"),
        (
            "disk use",
            f"{st.disk_bytes / 2**20:.1f} MiB of {st.quota_bytes / 2**20:.0f} MiB ({share:.1f} %)",
        ),
    ]
    for label, value in rows:
        typer.echo(f"{label:<16} {value}")
