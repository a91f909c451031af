"""A fake ``network`` module (Wi-Fi station) for the host simulation.

``networks`` maps the SSIDs in range to their passwords; a station connects when the SSID
is there and the password matches, otherwise it stays disconnected (as a board would).
"""

from __future__ import annotations

STA_IF = 0
AP_IF = 1
networks: dict[str, str] = {}
"""SSID -> password of the simulated access points."""
connect_calls: list[str] = []


class WLAN:
    def __init__(self, interface: int = STA_IF) -> None:
        self.interface = interface
        self._active = False
        self._ssid: str | None = None

    def active(self, on: bool | None = None) -> bool:
        if on is not None:
            self._active = bool(on)
        return self._active

    def connect(self, ssid: str, password: str = "") -> None:
        connect_calls.append(ssid)
        if self._active and networks.get(ssid) == password:
            self._ssid = ssid

    def disconnect(self) -> None:
        self._ssid = None

    def isconnected(self) -> bool:
        return self._ssid is not None

    def ifconfig(self) -> tuple[str, str, str, str]:
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
