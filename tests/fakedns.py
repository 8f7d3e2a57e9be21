"""A fake DNS for tests: chosen names resolve to chosen addresses, others as usual.

The machine running the suite may have no DNS at all; push endpoints are checked by
resolving their host, so tests give their example hosts addresses here. Tests must
never send to a name mapped to a public address (nothing listens there).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_real_getaddrinfo = socket.getaddrinfo


class FakeDNS:
    """``dns["push.example.com"] = ["93.184.215.14"]`` while the test runs."""

    def __init__(self, monkeypatch: Any) -> None:
        self.names: dict[str, list[str]] = {}
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def __setitem__(self, name: str, addresses: list[str]) -> None:
        self.names[name] = addresses

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        if host not in self.names:
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        port = int(port or 0)
        answers = []
        for address in self.names[host]:
            if ipaddress.ip_address(address).version == 6:
                answers.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return answers
