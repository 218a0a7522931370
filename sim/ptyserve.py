"""Serve a device endpoint on a pseudo-terminal, so serial programs (and `--port`) can talk to it.

`PtyServer(endpoint).start()` opens a pty pair, announces the terminal's path (a line `port: /dev/pts/N`), and
forwards bytes between the terminal and `endpoint.receive(bytes) -> reply bytes` until `stop()`. The
endpoint is anything with that method: the golden device behind sim.endpoint.DeviceEndpoint (used by the
tests), or a simulated board.

The server behaves like a board on a cable: clients may close the terminal and open it again, an
endpoint that fails on some bytes is logged and the server goes on serving, and reply bytes that a
client does not read are lost once the terminal's buffer is full (as on a UART without flow control)
rather than stalling the server.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import tty

log = logging.getLogger(__name__)


class PtyServer:
    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass unchanged: no echo, no line editing, no CR/LF translation
        os.set_blocking(self.master, False)  # a client that stops reading must not block the server
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open so the terminal survives clients closing it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.bytes_in = self.bytes_out = 0
        self.bytes_lost = 0  # reply bytes no client was reading
        self.failures = 0  # calls of endpoint.receive that raised (logged; the server kept serving)

    def serve_forever(self, poll: float = 0.05) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], poll)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO while no client holds the terminal (not while we hold it): wait
                self._stop.wait(poll)
                continue
            self.bytes_in += len(data)
            try:
                reply = self.endpoint.receive(data)
            except Exception:  # one bad exchange must not take the device away from later clients
                self.failures += 1
                log.exception("the device endpoint failed on %d received bytes; still serving %s",
                              len(data), self.path)
                continue
            self._send(reply)

    def _send(self, reply: bytes) -> None:
        try:
            n = os.write(self.master, reply) if reply else 0
        except BlockingIOError:
            n = 0
        except OSError as e:
            log.warning("writing to %s failed (%s); %d reply bytes lost", self.path, e, len(reply))
            n = 0
        self.bytes_out += n
        self.bytes_lost += len(reply) - n

    def start(self) -> "PtyServer":
        self._thread = threading.Thread(target=self.serve_forever, name=f"pty {self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        """Stop serving and close the terminal: to its clients, the device is gone."""
        self.stop()  # first, so that the thread never polls a closed (or reused) descriptor
        if not self._closed:
            self._closed = True
            os.close(self.master)
            os.close(self._slave)
