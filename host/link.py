"""The host's side of the link (docs/protocol.md), over the contract's codec (sim/contract/protocol.py).

- `Device`: the host's API (info, weights, batches, the training set, inference, training steps and
  runs of steps, counters) over any
  transport with `write(bytes)` and `read(timeout) -> bytes`; stop-and-wait with a timeout and
  bounded retries, which is safe because every request is idempotent.
- `LoopbackTransport`: an in-process transport to a device's endpoint (sim.endpoint.DeviceEndpoint).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rfsnn.sim.contract import protocol as P
from rfsnn.sim.contract.commands import INFO_FIELDS, Reg, counter_names, mode_bits, parse_info
from rfsnn.sim.contract.config import DeviceConfig, StepParams, forward_passes
from rfsnn.sim.contract.protocol import LinkStatus


class LinkError(RuntimeError):
    """The link failed: no valid reply after the retries, or the device refused a request."""


class LoopbackTransport:
    """Host <-> a device endpoint in one process (the golden device behind the real byte protocol):
    anything with receive(bytes) -> reply bytes."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self._rx = bytearray()
        self.bytes_sent = self.bytes_received = 0

    def write(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        reply = self.endpoint.receive(data)
        self.bytes_received += len(reply)
        self._rx += reply

    def read(self, timeout: float) -> bytes:
        out, self._rx = bytes(self._rx), bytearray()
        if not out and timeout > 0:
            time.sleep(timeout)  # as a port would wait (nothing can arrive meanwhile: replies come with write)
        return out


# What a failing port raises: serial.SerialException is an OSError, and pyserial lets the termios
# errors of reset_input_buffer and flush through unwrapped.
try:
    import termios
    _PORT_ERRORS: tuple = (OSError, termios.error)
except ImportError:  # not a POSIX system
    _PORT_ERRORS = (OSError,)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class SerialTransport:
    """A serial port (a board's UART, a USB CDC-ACM port, or a pseudo-terminal) through pyserial.

    Every failure of the port (unplugged, the other end of a pseudo-terminal gone, another program
    holding it) is a LinkError naming the port."""

    def __init__(self, port: str, baud: int = 3_000_000):
        import serial  # pyserial

        self.name = port
        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=0)
        except _PORT_ERRORS as e:
            raise LinkError(f"cannot open serial port {port}: {_one_line(e)}") from None
        try:
            self.port.reset_input_buffer()  # bytes left over from an earlier session are not replies to us
        except _PORT_ERRORS as e:
            self.close()
            raise LinkError(f"cannot open serial port {port}: {_one_line(e)}") from None

    def _failed(self, what: str, e: BaseException) -> LinkError:
        return LinkError(f"serial port {self.name}: {what} failed ({_one_line(e)}); is the device still "
                         "connected, and no other program using the port?")

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except _PORT_ERRORS as e:
            raise self._failed("sending", e) from None

    def read(self, timeout: float) -> bytes:
        """Whatever has arrived, waiting up to `timeout` seconds for the first byte."""
        try:
            self.port.timeout = timeout
            first = self.port.read(1)
            if not first:
                return b""
            self.port.timeout = 0
            return first + self.port.read(self.port.in_waiting or 0)
        except _PORT_ERRORS as e:
            raise self._failed("receiving", e) from None

    def close(self) -> None:
        try:
            self.port.close()
        except _PORT_ERRORS:
            pass  # the port is gone already; closing it cannot fail more usefully than that


# ---- the host's side --------------------------------------------------------------------------------
def check_config(expected: DeviceConfig, found: DeviceConfig) -> None:
    """Refuse a device built for another configuration, naming the first differing field."""
    a, b = expected.to_dict(), found.to_dict()
    for k in a:
        if a[k] != b.get(k):
            raise LinkError(f"the device is built for {k} = {b.get(k)}, but this run needs {k} = {a[k]}; "
                            "build and load a matching bitstream, or run with the device's configuration")


@dataclass
class StepReply:
    losses: list[int]
    steps: list[int]
    repeated: bool  # the device had run this step already (a resent frame)


class _Trouble(Exception):
    """A frame of a pipelined exchange got no valid reply (the line was drained before this is raised)."""


DRAIN_TIMEOUTS = 3  # a drain ends after this many timeouts even if the device is still sending


def _step_registers(sp: StepParams) -> list[tuple[Reg, int]]:
    """The registers of a training step besides its seed, as SET writes them."""
    return [(Reg.DIRECTIONS, sp.directions), (Reg.SIGMA, sp.sigma), (Reg.GAIN_MANT, sp.gain_mant),
            (Reg.GAIN_SHIFT, sp.gain_shift), (Reg.CLIP, sp.clip),
            (Reg.MODE, mode_bits(sp.noise, sp.difference, sp.scope, sp.stochastic_rounding)),
            (Reg.LAYER_START, sp.layer_start)]


class Device:
    def __init__(self, transport, expect: DeviceConfig | None = None, timeout: float = 1.0, retries: int = 3,
                 window: int = P.RX_WINDOW):
        """timeout: seconds to wait for a reply (a virtual board needs tens of seconds for long steps);
        retries: resends of a frame before giving up, spread over at least `timeout` seconds (resend_delay);
        window: bytes sent ahead of their replies (at most the device's receive buffer, P.RX_WINDOW; 0
        means stop-and-wait). Every failure of the link raises LinkError."""
        self.t, self.timeout, self.retries, self.window = transport, timeout, retries, window
        self.deframer = P.Deframer()
        self.seq = 0
        self.retried = 0  # frames sent again (no reply in time, or a damaged one)
        self.recoveries = 0  # pipelined steps that lost a frame and were put right (train_step)
        self._pending: dict[int, P.Reply] = {}  # replies read while waiting for another frame's, by SEQ
        self.vb = 2  # INFO replies do not depend on it; set from the configuration below
        self.cfg, self.neuron_lanes, self.sample_lanes = self.info()
        self.vb = P.value_bytes(self.cfg)
        if expect is not None:
            check_config(expect, self.cfg)
        self.steps_done = self.request([P.step_count()])[0]
        self._registers: dict[Reg, int] = {}  # step registers as last set on the device by this host

    def resend_delay(self, k: int) -> float:
        """Seconds from a frame's first failed try to its k-th resend (k = 1..retries): the gaps double and
        the last resend goes out `timeout` after the first failure, so that a disturbance shorter than
        the timeout (a burst of noise, a device that was busy) cannot use up the retries."""
        return self.timeout * ((1 << k) - 1) / max(1, (1 << self.retries) - 1)

    # -- frames: stop-and-wait, or pipelined up to `window` bytes ahead --
    def request(self, requests: list[P.Request]) -> list:
        return self.exchange([requests])[0]

    def exchange(self, frames: list[list[P.Request]], on_trouble: str = "resend") -> list[list]:
        """Send frames and return each one's decoded reply data, in order.

        Frames go out up to `window` bytes ahead of their replies, which the device's receive FIFO
        holds while it works; replies come back in order. When a reply is missing, refused or does not
        fit its frame, the line is drained and then, with on_trouble="resend", the frames still
        unanswered are sent again one at a time, after the delays of resend_delay (every request is
        idempotent; these frames must not depend on each other's order); with on_trouble="raise",
        _Trouble is raised for a caller that knows how to recover.
        """
        n = len(frames)
        seqs = [(self.seq + i) % P.REFUSED_SEQ for i in range(n)]
        wires = [P.frame(P.encode_request_payload(q, f, self.vb)) for q, f in zip(seqs, frames)]
        try:
            return self._exchange(frames, seqs, wires, on_trouble)
        finally:
            self.seq = (self.seq + n) % P.REFUSED_SEQ  # whatever happened, these numbers are used

    def _exchange(self, frames, seqs, wires, on_trouble) -> list[list]:
        n = len(frames)
        results: list = [None] * n
        tries = [0] * n
        first_sent: list[float | None] = [None] * n  # time.monotonic() of each frame's first try
        first_failure: list[float | None] = [None] * n  # and of its first failure: resends count from it
        sent = acked = in_flight = 0
        lockstep = self.window == 0
        while acked < n:
            while sent < n and (sent == acked or (not lockstep and in_flight + len(wires[sent]) <= self.window)):
                if tries[sent] == 0:
                    self._pending.pop(seqs[sent], None)  # a stale reply from 255 frames ago
                if not (lockstep and seqs[sent] in self._pending):  # a resend whose first reply came late
                    self._send(wires[sent])
                    if first_sent[sent] is None:
                        first_sent[sent] = time.monotonic()
                    self.retried += tries[sent] > 0
                    tries[sent] += 1
                    in_flight += len(wires[sent])
                sent += 1
            reply = self._await(seqs[acked])
            trouble = reply if isinstance(reply, str) else self._misfit(frames[acked], reply)
            if not trouble:
                in_flight = max(0, in_flight - len(wires[acked]))
                if reply.status != LinkStatus.OK:
                    raise LinkError(self._refusal(frames[acked], reply))
                results[acked] = P.split_reply_data(frames[acked], reply, self.vb)
                acked += 1
                continue
            if first_failure[acked] is None:
                first_failure[acked] = time.monotonic()
            if sent > acked + 1:  # later frames are in flight: let the device finish them first
                self._drain()
            if on_trouble == "raise" and sent > acked + 1:
                raise _Trouble(trouble)
            if tries[acked] > self.retries:
                raise LinkError(f"{self._names(frames[acked])}: no valid reply after {tries[acked]} tries in "
                                f"{time.monotonic() - first_sent[acked]:.2f} s; last: {trouble}")
            self._listen(first_failure[acked] + self.resend_delay(tries[acked]), seqs[acked])
            lockstep, sent, in_flight = True, acked, 0
        return results

    def _misfit(self, requests: list[P.Request], reply: P.Reply) -> str:
        """Why this reply (with the frame's SEQ) cannot be used: "" if it can."""
        if reply.status in (LinkStatus.BAD_CRC, LinkStatus.BAD_LENGTH, LinkStatus.BUSY):
            return f"the device answered {reply.status.name}"
        mismatch = P.reply_mismatch(requests, reply, self.vb)
        return f"a reply that does not fit its frame ({mismatch})" if mismatch else ""

    @staticmethod
    def _names(requests: list[P.Request]) -> str:
        return ", ".join(r.code.name for r in requests[:4]) + (" ..." if len(requests) > 4 else "")

    def _refusal(self, requests: list[P.Request], reply: P.Reply) -> str:
        failed = requests[reply.done] if reply.done < len(requests) else None
        what = f"{failed.code.name}{failed.args or ''}" if failed else self._names(requests)
        return (f"{what}: the device answered {reply.status.name} "
                f"({reply.done} of {len(requests)} requests of the frame completed)")

    # -- the transport: its failures become LinkError; every wait has a deadline --
    def _send(self, wire: bytes) -> None:
        try:
            self.t.write(wire)
        except OSError as e:  # a transport that does not say LinkError itself
            raise LinkError(f"the link failed while sending: {_one_line(e)}") from None

    def _replies(self, timeout: float):
        """Decoded replies (P.Reply) or trouble descriptions (str) from one read."""
        try:
            data = self.t.read(timeout)
        except OSError as e:
            raise LinkError(f"the link failed while receiving: {_one_line(e)}") from None
        for rx in self.deframer.feed(data):
            if rx.payload is None:
                yield f"a damaged reply ({rx.reason})"
                continue
            try:
                yield P.decode_reply(rx.payload)
            except P.ParseError as e:
                yield f"an unreadable reply ({e})"

    def _keep(self, r) -> str | None:
        """File a reply under its SEQ for whoever waits for it; return the trouble it shows, if any."""
        if isinstance(r, str):
            return r
        if r.seq == P.REFUSED_SEQ:  # the device could not read a frame of ours
            return f"the device answered {r.status.name}"
        self._pending[r.seq] = r  # ours, a later frame's (pipelined), or a late reply to an earlier one
        return None

    def _await(self, seq: int) -> P.Reply | str:
        """This frame's reply; else, once nothing more is coming for now, the trouble seen."""
        if seq in self._pending:
            return self._pending.pop(seq)
        deadline = time.monotonic() + self.timeout
        while True:
            trouble = None
            for r in self._replies(max(0.0, deadline - time.monotonic())):
                trouble = self._keep(r) or trouble
            if seq in self._pending:
                return self._pending.pop(seq)
            if trouble is not None:
                return trouble
            if time.monotonic() >= deadline:
                return f"no reply within {self.timeout} s"

    def _listen(self, until: float, seq: int) -> None:
        """Keep the replies that arrive until `until` (time.monotonic()), or until frame `seq`'s late reply."""
        while seq not in self._pending and (left := until - time.monotonic()) > 0:
            for r in self._replies(left):
                self._keep(r)

    def _drain(self) -> None:
        """Keep the replies still coming until the device has been quiet for `timeout` seconds, or for
        DRAIN_TIMEOUTS timeouts at most: a device that never stops sending does not hold the host."""
        give_up = time.monotonic() + DRAIN_TIMEOUTS * self.timeout
        while (left := give_up - time.monotonic()) > 0:
            got = False
            for r in self._replies(min(self.timeout, left)):
                got = True
                self._keep(r)
            if not got:
                return

    # -- the device API --
    def info(self) -> tuple[DeviceConfig, int, int]:
        n = len(INFO_FIELDS)
        words = self.request([P.info(i) for i in range(n)])
        if words[0] != 1:
            raise LinkError(f"the device speaks interface version {words[0]}; this host speaks version 1")
        n_layers = words[INFO_FIELDS.index("n_layers")]
        most = (P.MAX_PAYLOAD - 3) // 4 - 1  # the layer widths are read in one frame
        if not 1 <= n_layers <= most:
            raise LinkError(f"the device reports {n_layers} layers; this host reads 1..{most}")
        words += self.request([P.info(n + i) for i in range(n_layers + 1)])
        try:
            return parse_info(words)
        except (ValueError, TypeError, ArithmeticError) as e:  # a configuration no device can have
            raise LinkError(f"the device's INFO words make no valid configuration: {_one_line(e)}") from None

    def _per_frame(self, overhead: int) -> int:
        return min(255, (P.MAX_PAYLOAD - overhead) // self.vb)

    def write_params(self, params: list[np.ndarray]) -> None:
        n = self._per_frame(1 + 6 + 2)  # SEQ, PARAM_SEEK, PARAM_WRITE's code and count
        if len(params) != self.cfg.n_layers:
            raise ValueError(f"{len(params)} weight matrices; the device's network has {self.cfg.n_layers} layers")
        frames = []
        for l, p in enumerate(params):
            p = np.asarray(p, np.int64)
            o, i = self.cfg.layer_shapes[l]
            if p.shape != (o, i + 1):
                raise ValueError(f"layer {l + 1}: weights of shape {p.shape}; the device's are ({o}, {i + 1}) "
                                 "(the bias is the last column)")
            self._check(p, self.cfg.w_range, f"layer {l + 1} weight row/column")
            flat = p.ravel()
            for start in range(0, len(flat), n):
                row, col = divmod(start, i + 1)
                frames.append([P.param_seek(l, row, col), P.param_write(flat[start:start + n])])
        self.exchange(frames)

    def read_params(self) -> list[np.ndarray]:
        n = self._per_frame(3)
        frames, layer_of = [], []
        for l, (o, i) in enumerate(self.cfg.layer_shapes):
            for start in range(0, o * (i + 1), n):
                row, col = divmod(start, i + 1)
                frames.append([P.param_seek(l, row, col), P.param_read(min(n, o * (i + 1) - start))])
                layer_of.append(l)
        vals: list[list[int]] = [[] for _ in self.cfg.layer_shapes]
        for l, got in zip(layer_of, self.exchange(frames)):
            vals[l] += got[1]
        return [np.array(v, np.int64).reshape(o, i + 1) for v, (o, i) in zip(vals, self.cfg.layer_shapes)]

    def _check(self, values: np.ndarray, rng: tuple[int, int], what: str) -> None:
        """Refuse values the device would refuse, before anything is sent."""
        bad = (values < rng[0]) | (values > rng[1])
        if bad.any():
            at = np.unravel_index(int(np.argmax(bad)), values.shape)
            raise ValueError(f"{what} {'/'.join(map(str, at))}: {int(values[at])} is outside the device's "
                             f"range [{rng[0]}, {rng[1]}]; nothing was sent")

    def _sample_frames(self, x: np.ndarray, t: np.ndarray, depth: int, what: str, seek, write,
                       last: list[P.Request]) -> list[list[P.Request]]:
        """Frames that write samples (inputs x, targets t, device integers) through a sample pointer from
        0, `last` riding with the final frame."""
        x, t = np.asarray(x, np.int64), np.asarray(t, np.int64)
        cfg = self.cfg
        if x.ndim != 2 or t.ndim != 2 or x.shape[1] != cfg.layers[0] or t.shape != (len(x), cfg.layers[-1]):
            raise ValueError(f"{what} of shape {x.shape} -> {t.shape}; the device takes (B, {cfg.layers[0]}) "
                             f"-> (B, {cfg.layers[-1]})")
        if not 1 <= len(x) <= depth:
            raise ValueError(f"{what} of {len(x)} samples; the device holds 1..{depth}")
        self._check(x, cfg.x_range, "input sample/column")
        self._check(t, cfg.y_range, "target sample/column")
        per_sample = x.shape[1] + t.shape[1]
        per_frame = self._per_frame(1 + 6 + 3 + 2) // per_sample  # SEQ, SET, the seek, the write's code and count
        rows = np.concatenate([x, t], axis=1)
        frames = []
        for s in range(0, len(rows), per_frame):
            frames.append([seek(s), write(rows[s:s + per_frame].ravel())])
        frames[-1] = last + frames[-1]
        return frames

    def batch_frames(self, x: np.ndarray, t: np.ndarray) -> list[list[P.Request]]:
        """The frames that load a batch (inputs x, targets t, device integers) into the sample memory."""
        return self._sample_frames(x, t, self.cfg.max_batch, "a batch", P.sample_seek, P.sample_write,
                                   [P.set_register(Reg.BATCH, len(x))])

    def upload_set(self, x: np.ndarray, t: np.ndarray) -> None:
        """The training set into the device's set memory (TRAIN_STEPS draws from it), and SAMPLES."""
        if self.cfg.max_samples == 0:
            raise ValueError("this device holds no training set (max_samples 0): stream its batches")
        self.exchange(self._sample_frames(x, t, self.cfg.max_samples, "a training set", P.data_seek,
                                          P.data_write, [P.set_register(Reg.SAMPLES, len(x))]))

    def load_batch(self, x: np.ndarray, t: np.ndarray) -> None:
        self.exchange(self.batch_frames(x, t))

    def infer(self) -> int:
        return self.request([P.infer()])[0]

    def read_outputs(self, batch: int) -> np.ndarray:
        nL = self.cfg.layers[-1]
        per_frame = self._per_frame(3) // nL
        vals = []
        for s in range(0, batch, per_frame):
            count = min(per_frame, batch - s)
            vals += self.request([P.sample_seek(s), P.output_read(count * nL)])[1]
        return np.array(vals, np.int64).reshape(batch, nL)

    def train_step(self, sp: StepParams, batch: tuple[np.ndarray, np.ndarray] | None = None,
                   next_batch: tuple[np.ndarray, np.ndarray] | None = None, loaded: bool = False) -> StepReply:
        """One training step on `batch` (inputs, targets); loaded=True: the batch is on the device already
        (sent as an earlier step's next_batch). next_batch goes out right behind the step's frame, so
        its upload overlaps the step's compute (docs/protocol.md, "Pipelining")."""
        regs = [(Reg.SEED, sp.seed)] + _step_registers(sp)
        n_losses = forward_passes(sp.directions, sp.difference)
        reads = [P.read_loss(i) for i in range(n_losses)] + [P.read_step(k) for k in range(sp.directions)]
        # Registers keep their values on the device: send only those that changed (usually the seed).
        sets = [P.set_register(r, v) for r, v in regs if self._registers.get(r) != v]
        step = sets + [P.train_step(self.steps_done)]
        together = 3 + 2 + sum(r.reply_length(self.vb) for r in reads) <= P.MAX_PAYLOAD
        step_frame = step + reads if together else step  # one frame per step when the reply fits
        if batch is not None and not loaded:
            self.load_batch(*batch)  # not pipelined with the step: the step must not run on half a batch
        after = [] if next_batch is None else self.batch_frames(*next_batch)
        try:
            reply = self.exchange([step_frame] + after, on_trouble="raise")[0]
        except _Trouble:
            self.recoveries += 1
            # A frame was lost while others were in flight; the line is drained, and the device ran
            # what it received in order. Did this step run? If not, the next batch may have overwritten
            # its batch: send that again first.
            if self.request([P.step_count()])[0] == self.steps_done:
                if batch is None:
                    raise LinkError("TRAIN_STEP was lost after the next batch was sent, and the step's own "
                                    "batch is not at hand to send again") from None
                self.load_batch(*batch)
            reply = self.request(step_frame)  # answers "repeated" if the step ran already
            if next_batch is not None:
                self.load_batch(*next_batch)
        self._registers.update(regs)
        got, repeated = reply[len(sets)]
        if got != n_losses:
            raise LinkError(f"TRAIN_STEP: the device ran {got} passes, {n_losses} expected for {sp.difference} "
                            f"differences with K = {sp.directions}")
        self.steps_done = (self.steps_done + 1) & 0xFFFF
        values = reply[len(sets) + 1:]
        if not together:
            for s in range(0, len(reads), 24):  # 24 x 8 bytes fit a reply
                values += self.request(reads[s:s + 24])
        return StepReply(values[:n_losses], values[n_losses:], repeated)

    def train_steps(self, sp: StepParams, batch: int, count: int, data_seed: int) -> int:
        """A run of `count` steps on batches the device draws from its training set (upload_set), from the
        batch stream state `data_seed`; returns the sum of the steps' base losses. sp.seed is unused (the
        stream draws each step's seed) and sp.layer_start is the first step's. Every register goes out with
        the run, so a resent frame leaves the device as the first try did (answered "repeated")."""
        regs = [(Reg.BATCH, batch)] + _step_registers(sp) + [(Reg.DATA_SEED, data_seed)]
        reply = self.request([P.set_register(r, v) for r, v in regs] + [P.train_steps(self.steps_done, count)])
        total, _repeated = reply[-1]
        self._registers.update(regs)
        for moved in (Reg.SEED, Reg.LAYER_START, Reg.DATA_SEED):  # the run moved these on
            self._registers.pop(moved, None)
        self.steps_done = (self.steps_done + count) & 0xFFFF
        return total

    def counters(self) -> dict[str, int]:
        names = counter_names(self.cfg)
        return dict(zip(names, self.request([P.read_counter(i) for i in range(len(names))])))

    def clear_counters(self) -> None:
        self.request([P.clear_counters()])
