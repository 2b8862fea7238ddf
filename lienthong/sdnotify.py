"""Tell systemd about the daemon's state (``Type=notify``): READY, WATCHDOG, STOPPING, STATUS.

The protocol is one datagram per message to the unix socket named by ``$NOTIFY_SOCKET`` (an
``@`` prefix means the abstract namespace). Outside systemd the variable is unset and every call
is a no-op, so the daemon runs the same in a terminal. A failed send is reported to the caller
as ``False`` and never raises: the daemon must not stop serving because its supervisor is away.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends sd_notify messages to the socket systemd gave us, if any."""

    def __init__(self, address: str | None = None) -> None:
        """Use ``address`` or, by default, ``$NOTIFY_SOCKET``; ``None`` or empty disables."""
        raw = os.environ.get("NOTIFY_SOCKET", "") if address is None else address
        self._address = "\0" + raw[1:] if raw.startswith("@") else raw

    @property
    def enabled(self) -> bool:
        """True when there is a socket to talk to."""
        return bool(self._address)

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one message; True when it was sent."""
        if not self._address:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never wait: a listener that does not read must not freeze the event loop
                # (a full queue drops the message; systemd always reads).
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        """The daemon serves now (store open, links up)."""
        return self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        """The event loop still turns."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        """The daemon has stopped intake and is draining."""
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """A one-line state for ``systemctl status``."""
        return self.notify(f"STATUS={status}")


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd expects (``$WATCHDOG_USEC``), or None if unset."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
