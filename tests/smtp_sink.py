"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, keeping what it receives."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter


class Inbox:
    """An aiosmtpd handler that keeps every message and the connections they came on."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[tuple[list[str], bytes]] = []
        self.peers: set[tuple[str, int]] = set()
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), envelope.original_content))
            self.peers.add(session.peer)
        return "250 OK"

    def count(self) -> Counter:
        with self.lock:
            return Counter(rcpt for rcpts, _ in self.received for rcpt in rcpts)

    def refuse_data(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer ``reply`` to the DATA of a message to ``address`` (the first
        ``times`` times; always when None)."""
        accept, refused = self.handle_DATA, []

        async def handle_data(server, session, envelope):
            if envelope.rcpt_tos == [address] and (times is None or len(refused) < times):
                refused.append(address)
                return reply
            return await accept(server, session, envelope)

        self.handle_DATA = handle_data

    def refuse_recipient(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer ``reply`` to ``RCPT TO:<address>`` (the first ``times`` times)."""
        refused = []

        async def handle_rcpt(server, session, envelope, rcpt, rcpt_options):
            if rcpt == address and (times is None or len(refused) < times):
                refused.append(rcpt)
                return reply
            envelope.rcpt_tos.append(rcpt)
            envelope.rcpt_options.extend(rcpt_options)
            return "250 OK"

        self.handle_RCPT = handle_rcpt


class CountingInbox(Inbox):
    """An Inbox counting the messages whose ``RCPT TO`` had already arrived when their
    ``MAIL FROM`` was read (pipelined)."""

    pipelined = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if b"RCPT TO:" in bytes(server._reader._buffer):
            self.pipelined += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


class PipeliningInbox(CountingInbox):
    """A CountingInbox whose server offers PIPELINING (RFC 2920), as Postfix does."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
