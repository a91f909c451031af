"""A fake ``network`` module (Wi-Fi station) for the host simulation: a hardware boundary.

``networks`` maps the SSIDs in range to their passwords; a station connects when the SSID
is there and the password matches, otherwise it stays disconnected (as a board would).
As on the board, every ``WLAN(STA_IF)`` is the same interface; :func:`drop` makes it lose
its association (the access point rebooted, the signal faded), as tests need.
"""

from __future__ import annotations

STA_IF = 0
AP_IF = 1
networks: dict[str, str] = {}
"""SSID -> password of the simulated access points."""
connect_calls: list[str] = []
_ifaces: dict[int, dict[str, object]] = {}


def drop() -> None:
    """Every interface loses its association (it may associate again)."""
    for st in _ifaces.values():
        st["ssid"] = None


class WLAN:
    def __init__(self, interface: int = STA_IF) -> None:
        self.interface = interface
        self._st = _ifaces.setdefault(interface, {"active": False, "ssid": None})

    def active(self, on: bool | None = None) -> bool:
        if on is not None:
            self._st["active"] = bool(on)
        return bool(self._st["active"])

    def connect(self, ssid: str, password: str = "") -> None:
        connect_calls.append(ssid)
        if self._st["active"] and networks.get(ssid) == password:
            self._st["ssid"] = ssid

    def disconnect(self) -> None:
        self._st["ssid"] = None

    def isconnected(self) -> bool:
        return self._st["ssid"] is not None

    def ifconfig(self) -> tuple[str, str, str, str]:
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
