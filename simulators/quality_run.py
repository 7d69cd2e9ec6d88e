"""``gxpgate simulate quality-service``: the quality-service simulator in the foreground, with
the MQTT consumer when asked and the technician's script
(:data:`gxpgate.simulators.script.QUALITY_SERVICE`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from gxpgate.agent.evidence import load_public_key
from gxpgate.simulators.mqtt_consumer import EVIDENCE_FILTER, MqttEvidenceConsumer
from gxpgate.simulators.quality_service import QualityServiceSimulator
from gxpgate.simulators.script import QUALITY_SERVICE, Command, drive

__all__ = ["apply_command", "run_forever"]


def run_forever(
    db_path: str | os.PathLike[str],
    host: str,
    port: int,
    public_key_paths: list[Path],
    token: str | None,
    print_fn: Callable[[str], object] = print,
    mqtt_broker: tuple[str, int] | None = None,
    script: Sequence[Command] = (),
    interactive: bool = False,
) -> None:
    """Serve in the foreground until Ctrl-C (``gxpgate simulate quality-service``); with
    ``mqtt_broker`` also consume the MQTT uplink's batches from that broker (CONTRACT §4).

    Raises :class:`gxpgate.agent.evidence.KeyFileError` for an unreadable or non-Ed25519 key file,
    and
    :class:`TimeoutError` when the broker does not confirm the subscription.
    """
    keys = [load_public_key(Path(p)) for p in public_key_paths]
    sim = QualityServiceSimulator(db_path, keys, host=host, port=port, token=token)
    with sim:
        print_fn(f"Quality-service simulator listening on {sim.url}")
        consumer = None
        if mqtt_broker is not None:
            consumer = MqttEvidenceConsumer(sim, *mqtt_broker).start()
            where = f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}"
            print_fn(f"Consuming {EVIDENCE_FILTER} from {where} (QoS 1, persistent session)")
        try:
            asyncio.run(
                drive(
                    lambda command: apply_command(sim, command),
                    {},
                    script,
                    interactive,
                    print_fn,
                    QUALITY_SERVICE,
                )
            )
        except KeyboardInterrupt:
            pass
        finally:
            if consumer is not None:
                consumer.stop()


def apply_command(sim: QualityServiceSimulator, command: Command) -> None:
    """Carry out one command of :data:`gxpgate.simulators.script.QUALITY_SERVICE`."""
    if command.verb == "outage":
        sim.outage(command.seconds or 0.0)
    elif command.verb == "delay":
        sim.set_delay(command.seconds or 0.0)
    elif command.verb == "drop":
        sim.drop_next(int(command.values[0]))
    elif command.verb == "fail":
        sim.fail_next(int(command.values[0]), int(command.values[1]), command.seconds)
