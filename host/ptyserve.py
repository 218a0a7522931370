"""Serve a device endpoint on a pseudo-terminal, so serial programs (and `--port`) can talk to it.

`serve(endpoint)` opens a pty pair, announces the terminal's path (a line `port: /dev/pts/N`), and
forwards bytes between the terminal and `endpoint.receive(bytes) -> reply bytes` until stopped. The
endpoint is anything with that method: the golden device behind host.link.DeviceEndpoint (used by the
tests), or a simulated board.
"""
from __future__ import annotations

import os
import select
import threading
import tty


class PtyServer:
    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass unchanged: no echo, no line editing, no CR/LF translation
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open so the terminal survives clients closing it
        self._stop = threading.Event()
        self.bytes_in = self.bytes_out = 0

    def serve_forever(self, poll: float = 0.05) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], poll)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                continue
            self.bytes_in += len(data)
            reply = self.endpoint.receive(data)
            if reply:
                os.write(self.master, reply)
                self.bytes_out += len(reply)

    def start(self) -> "PtyServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        os.close(self.master)
        os.close(self._slave)
