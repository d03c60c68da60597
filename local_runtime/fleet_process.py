"""The simulated fleet in a process of its own, as devices are machines of their own.

The runtime's process is busy with moto, the pollers and the functions' requests, and Python runs one thread at a
time in it: a fleet there waits its turn to see a script end and to start the next, and leaves the second core idle.
So ``FleetProcess`` starts ``python -m local_runtime.fleet_process``, which holds the ``Fleet``: the edge hands it
SSM's and the tagging API's actions over a local connection (``handle``, answered or refused with ``FleetError``
as in-process), it sends SSM's EventBridge events back on a connection of their own for the runtime's bus to
deliver, and its devices call S3 through the edge over HTTP, as devices do. ``close``, or the runtime's process
ending, stops the fleet: its scripts are killed and its working directories removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from local_runtime.fleet import EventFaults, Fleet, FleetError
from local_runtime.identities import Credentials

log = logging.getLogger("local_runtime.fleet")
MODULE = "local_runtime.fleet_process"
"""What the fleet's process runs (``python -m``): by it the runtime's processes are told from the devices' scripts"""
STOP_SECONDS = 15
"""How long the fleet's process has to kill its scripts and remove their directories before it is killed"""


class FleetProcess:
    def __init__(
        self,
        announce: Callable[[dict[str, Any]], object],
        *,
        device_ids: list[str],
        tag_key: str,
        region: str,
        s3_endpoint: str,
        credentials: Credentials,
        unmanaged: list[str],
        unresponsive: list[str],
        faults: EventFaults,
    ) -> None:
        """Start the fleet's process (its arguments are ``Fleet``'s); ``announce`` gets each SSM event it sends."""
        self._authkey = os.urandom(32)
        settings = {
            "authkey": self._authkey.hex(),
            "log_level": logging.getLogger().getEffectiveLevel(),
            "fleet": {
                "device_ids": device_ids,
                "tag_key": tag_key,
                "region": region,
                "s3_endpoint": s3_endpoint,
                "credentials": asdict(credentials),
                "unmanaged": unmanaged,
                "unresponsive": unresponsive,
                "faults": asdict(faults),
            },
        }
        self._process = subprocess.Popen([sys.executable, "-m", MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._process.stdin and self._process.stdout
        self._process.stdin.write(json.dumps(settings).encode())
        self._process.stdin.close()
        self._address = self._process.stdout.readline().decode().strip()
        self._process.stdout.close()
        if not self._address:
            raise RuntimeError(f"the fleet's process ended as it started (exit code {self._process.wait()})")
        self._events = Client(self._address, authkey=self._authkey)  # its first connection: the events
        self._idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._announce = announce
        self._listening = threading.Thread(target=self._pass_events, daemon=True, name="fleet-events")
        self._listening.start()

    def handle(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """One of SSM's or the tagging API's actions, answered by the fleet; FleetError as the fleet refuses it,
        RuntimeError if the fleet itself failed on it."""
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = Client(self._address, authkey=self._authkey)
        connection.send((action, body))
        answer = connection.recv()
        self._idle.put(connection)
        if "error" in answer:
            raise FleetError(*answer["error"])
        if "failed" in answer:
            raise RuntimeError(answer["failed"])
        return dict(answer["result"])

    def _pass_events(self) -> None:
        with contextlib.suppress(EOFError, OSError):  # the fleet has stopped
            while True:
                event = self._events.recv()
                try:
                    self._announce(event)
                except Exception:
                    log.exception("an SSM event could not be put on the bus")

    def close(self) -> None:
        """Stop the fleet: its scripts killed, its directories removed, its process ended."""
        with contextlib.suppress(OSError):  # it has already ended
            self._events.send("stop")  # closing a socket another thread reads would not tell the other end
        try:
            self._process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        while not self._idle.empty():
            self._idle.get_nowait().close()
        self._listening.join(timeout=5)
        self._events.close()


def _serve(connection: Connection, fleet: Fleet) -> None:
    """One connection's actions, one at a time, until the runtime closes it."""
    with contextlib.suppress(EOFError, OSError), connection:
        while True:
            action, body = connection.recv()
            try:
                connection.send({"result": fleet.handle(action, body)})
            except FleetError as error:
                connection.send({"error": [error.code, error.message]})
            except Exception as error:  # a fault of the local fleet itself: the edge answers 500, as in-process
                log.exception("the local fleet failed on %s", action)
                connection.send({"failed": f"the local fleet failed on {action}: {error!r}"})


def main() -> None:
    for stop in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a kill of the process group: the runtime stops us
        signal.signal(stop, signal.SIG_IGN)
    settings = json.loads(sys.stdin.buffer.read())
    logging.basicConfig(level=settings["log_level"], format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    listener = Listener(family="AF_UNIX", authkey=bytes.fromhex(settings["authkey"]))
    print(listener.address, flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing more is read from stdout: the rest goes to stderr
    events = listener.accept()
    sending = threading.Lock()

    def announce(event: dict[str, Any]) -> None:
        with sending, contextlib.suppress(OSError):  # the runtime is stopping: nobody is left to tell
            events.send(event)

    options = settings["fleet"]
    fleet = Fleet(
        **options | {"credentials": Credentials(**options["credentials"]), "faults": EventFaults(**options["faults"])},
        announce=announce,
    )

    def stop_with_the_runtime() -> None:
        with contextlib.suppress(EOFError, OSError):
            events.recv()  # "stop", or the runtime's process has ended
        fleet.close()
        listener.close()
        os._exit(0)

    threading.Thread(target=stop_with_the_runtime, daemon=True, name="fleet-stop").start()
    while True:
        connection = listener.accept()
        threading.Thread(target=_serve, args=(connection, fleet), daemon=True, name="fleet-actions").start()


if __name__ == "__main__":
    main()
