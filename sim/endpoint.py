"""The device's side of the host link in software (docs/protocol.md): bytes in, reply bytes out.

`DeviceEndpoint` executes each request of a checked frame as learner commands
(rfsnn.sim.contract.commands) on an executor, normally `GoldenDevice.execute`, and answers every
frame with one reply. It is the reference the gateware dispatcher (rtl/link/dispatcher.py) is checked
against, reply for reply, and what `rfsnn train --backend golden` talks to through the real codec.
"""
from __future__ import annotations

from .contract import protocol as P
from .contract.commands import Op, Status
from .contract.config import DeviceConfig
from .contract.fixed import MASK64, signed64
from .contract.protocol import REFUSED_SEQ, REQUESTS, Code, LinkStatus


class DeviceEndpoint:
    def __init__(self, execute, cfg: DeviceConfig, bulk=None):
        """execute(op, index, data) -> (status, data): one learner command. bulk (optional): an object with
        write_many, read_many and seek_param doing the same as repeated commands, faster (GoldenDevice)."""
        self.execute, self.cfg, self.bulk = execute, cfg, bulk
        self.vb = P.value_bytes(cfg)
        self.deframer = P.Deframer()
        self.steps_done = 0  # modulo 2**16, as STEP_COUNT reports it
        self.stepped = False  # a step has run since reset: steps_done 0 may then be a wrap, not the start
        self.last_losses = 0
        self.last_run: tuple[int, int, int] | None = None  # (first step, count, loss sum) of the last TRAIN_STEPS
        self.frames = {"ok": 0, "refused": 0}

    def receive(self, data: bytes) -> bytes:
        out = bytearray()
        for rx in self.deframer.feed(data):
            if rx.payload is None:
                self.frames["refused"] += 1
                out += P.frame(P.encode_reply(REFUSED_SEQ, rx.status, 0, b""))
            else:
                out += P.frame(self._run(rx.payload))
        return bytes(out)

    def _run(self, payload: bytes) -> bytes:
        try:
            parsed = P.parse_requests(payload, self.vb)
        except P.ParseError as e:
            self.frames["refused"] += 1
            return P.encode_reply(payload[0] if payload else REFUSED_SEQ, e.status, 0, b"")
        self.frames["ok"] += 1
        data = bytearray()
        for done, req in enumerate(parsed.requests):
            status, reply = self._request(req)
            if status != LinkStatus.OK:
                return P.encode_reply(parsed.seq, status, done, bytes(data))
            data += reply
        if parsed.unknown_at is not None:
            return P.encode_reply(parsed.seq, LinkStatus.UNKNOWN, parsed.unknown_at, bytes(data))
        return P.encode_reply(parsed.seq, LinkStatus.OK, len(parsed.requests), bytes(data))

    def _cmd(self, op: Op, index: int = 0, value: int = 0) -> tuple[int, int]:
        return self.execute(int(op), index, value & MASK64)

    def _request(self, req: P.Request) -> tuple[LinkStatus, bytes]:
        cfg, vb, c = self.cfg, self.vb, req.code
        ok = LinkStatus.OK
        if c == Code.NOP:
            return ok, b""
        op = REQUESTS[c].op
        if op is not None:  # a request that is one learner command
            if c == Code.SET:
                status, d = self._cmd(op, req.args[0], req.args[1])
            elif c in (Code.SAMPLE_SEEK, Code.DATA_SEEK):
                status, d = self._cmd(op, 0, req.args[0])
            else:
                status, d = self._cmd(op, req.args[0] if req.args else 0)
            if status != Status.OK:
                return LinkStatus(status), b""
            n = req.reply_length(vb)
            if c == Code.READ_STEP:
                return ok, signed64(d).to_bytes(4, "little", signed=True)
            return ok, (d & ((1 << (8 * n)) - 1)).to_bytes(n, "little") if n else b""
        if c == Code.PARAM_SEEK:
            layer, row, col = req.args
            if layer >= cfg.n_layers or row >= cfg.layer_shapes[layer][0] or col > cfg.layer_shapes[layer][1]:
                return LinkStatus.RANGE, b""
            skip = sum(o * (i + 1) for o, i in cfg.layer_shapes[:layer]) + row * (cfg.layer_shapes[layer][1] + 1) + col
            if self.bulk is not None:
                self.bulk.seek_param(skip)
                return ok, b""
            self._cmd(Op.PARAM_REWIND)
            for _ in range(skip):  # the pointer only walks forward (no division in the gateware)
                self._cmd(Op.PARAM_READ)
            return ok, b""
        if c in (Code.PARAM_WRITE, Code.SAMPLE_WRITE, Code.DATA_WRITE):
            op = {Code.PARAM_WRITE: Op.PARAM_WRITE, Code.SAMPLE_WRITE: Op.SAMPLE_WRITE, Code.DATA_WRITE: Op.DATA_WRITE}[c]
            if self.bulk is not None:
                status, _ = self.bulk.write_many(op, req.values)
                return LinkStatus(status), b""
            for v in req.values:
                status, _ = self._cmd(op, 0, v)
                if status != Status.OK:
                    return LinkStatus(status), b""
            return ok, b""
        if c in (Code.PARAM_READ, Code.OUTPUT_READ):
            op = Op.PARAM_READ if c == Code.PARAM_READ else Op.OUTPUT_READ
            if self.bulk is not None:
                status, vals = self.bulk.read_many(op, req.args[0])
                if status != Status.OK:
                    return LinkStatus(status), b""
                return ok, P.encode_values(vals, vb)
            out = bytearray()
            for _ in range(req.args[0]):
                status, d = self._cmd(op)
                if status != Status.OK:
                    return LinkStatus(status), b""
                out += signed64(d).to_bytes(vb, "little", signed=True)
            return ok, bytes(out)
        if c == Code.TRAIN_STEP:
            step = req.args[0]
            if step == self.steps_done:
                status, n = self._cmd(Op.TRAIN_STEP)
                if status != Status.OK:
                    return LinkStatus(status), b""
                self.steps_done = (self.steps_done + 1) & 0xFFFF
                self.stepped, self.last_losses, self.last_run = True, n, None
                return ok, bytes([n, 0])
            if self.stepped and self.last_run is None and step == (self.steps_done - 1) & 0xFFFF:
                return ok, bytes([self.last_losses, 1])  # already run: a resent frame
            return LinkStatus.RANGE, b""
        if c == Code.TRAIN_STEPS:
            # A run of `count` steps starting at step number `step`; resent after it ran (the device has
            # done step + count steps, and the run was the last thing that trained), it only replies.
            step, count = req.args
            if step == self.steps_done:
                status, total = self._cmd(Op.TRAIN_STEPS, 0, count)
                if status != Status.OK:
                    return LinkStatus(status), b""
                self.steps_done = (self.steps_done + count) & 0xFFFF
                self.stepped, self.last_run = True, (step, count, total)
                return ok, total.to_bytes(8, "little") + b"\x00"
            if self.last_run is not None and self.last_run[:2] == (step, count) \
                    and (step + count) & 0xFFFF == self.steps_done:
                return ok, self.last_run[2].to_bytes(8, "little") + b"\x01"
            return LinkStatus.RANGE, b""
        if c == Code.STEP_COUNT:
            return ok, self.steps_done.to_bytes(2, "little")
        return LinkStatus.UNKNOWN, b""
