"""The link's request dispatcher: checked frames in, learner commands out, one reply per frame.

The gateware form of rfsnn.sim.endpoint.DeviceEndpoint (docs/protocol.md), which is its reference:
- a frame's payload bytes are stored in a request buffer as the SLIP decoder delivers them; nothing
  runs until its verdict says the CRC matched (a refused frame is answered with SEQ 0xFF and the
  verdict's status, and changes nothing);
- a first pass walks the requests and checks that each fits in the frame, and that their replies
  fit in one (BAD_LENGTH, nothing runs);
- a second pass runs them in order as learner commands (sim/contract/commands.py), collecting reply data in a
  reply buffer, and stops at the first refusal or an unknown code;
- the reply is SEQ, STATUS, DONE and the buffered data. The header precedes the data but is known only
  at the end, hence the buffer.
PARAM_SEEK walks the learner's parameter pointer forward (PARAM_REWIND, then one PARAM_READ per
parameter skipped): no division in gateware, and a few thousand clocks at most.
TRAIN_STEPS keeps its last run (first step, count, loss sum) to answer the same request resent.
"""
from __future__ import annotations

from contextlib import contextmanager

from amaranth import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rfsnn.sim.contract.commands import Op, Status
from rfsnn.sim.contract.config import MAX_RUN_STEPS, DeviceConfig
from rfsnn.sim.contract.protocol import MAX_PAYLOAD, REFUSED_SEQ, REQUESTS, Code, value_bytes

from ..commands import COMMAND, RESPONSE
from .framing import PAYLOAD_BYTE, FrameStatus, verdict_layout

# From the contract's request table: fixed argument bytes, fixed reply bytes, the requests that are one
# command, those that carry a count byte and count values (the writes), and those whose reply is count
# x VB (the reads, whose argument is the count).
ARG_BYTES = {code: spec.arg_bytes for code, spec in REQUESTS.items() if spec.arg_bytes}
REPLY_BYTES = {code: spec.reply_bytes for code, spec in REQUESTS.items() if spec.reply_bytes}
SIMPLE = {code: spec.op for code, spec in REQUESTS.items() if spec.op is not None}
BULK_WRITES = [code for code, spec in REQUESTS.items() if spec.arg_bytes is None]
BULK_READS = [code for code, spec in REQUESTS.items() if spec.reply_bytes is None]
WRITE_OPS = {Code.PARAM_WRITE: Op.PARAM_WRITE, Code.SAMPLE_WRITE: Op.SAMPLE_WRITE, Code.DATA_WRITE: Op.DATA_WRITE}


class Dispatcher(wiring.Component):
    def __init__(self, cfg: DeviceConfig):
        self.cfg = cfg
        self.vb = value_bytes(cfg)
        # Training steps done since reset, modulo 2**16 (STEP_COUNT); an attribute so that a testbench
        # can start it near the wrap instead of running 65,536 steps.
        self.steps_done = Signal(16)
        super().__init__({
            "payload": In(stream.Signature(8)),
            "frame": In(stream.Signature(verdict_layout(MAX_PAYLOAD))),
            "reply": Out(stream.Signature(PAYLOAD_BYTE)),
            "cmd": Out(stream.Signature(COMMAND)),
            "rsp": In(stream.Signature(RESPONSE)),
            "idle": Out(1),  # waiting for a frame: nothing received is being worked on
        })

    def elaborate(self, platform):
        m = Module()
        cfg, vb = self.cfg, self.vb
        m.submodules.rq = rq = Memory(shape=8, depth=MAX_PAYLOAD + 1, init=[])
        m.submodules.rp = rp = Memory(shape=8, depth=MAX_PAYLOAD + 1, init=[])
        rq_w, rq_r = rq.write_port(), rq.read_port()
        rp_w, rp_r = rp.write_port(), rp.read_port()

        length = Signal(range(MAX_PAYLOAD + 2))  # payload bytes of the frame
        pos = Signal(range(MAX_PAYLOAD + 2 + 255 * 8))  # read position in the request buffer
        seq = Signal(8)
        status = Signal(8)
        done = Signal(8)  # requests completed
        rlen = Signal(range(MAX_PAYLOAD + 2))  # reply data bytes
        code = Signal(8)
        arg_bytes = max(max(n or 0 for n in ARG_BYTES.values()), vb)
        arg = Signal(8 * arg_bytes)  # the request's fixed arguments, or one value, little-endian
        got = Signal(range(arg_bytes))  # the byte of arg the next argument byte goes to
        nbytes = Signal(4)  # bytes still to gather into arg / to append
        count = Signal(9)  # values still to go in a bulk request
        out_val = Signal(8 * max(REPLY_BYTES.values()))  # value being appended to the reply
        steps_done = self.steps_done
        stepped = Signal()  # a step has run since reset: steps_done 0 may then be a wrap, not the start
        last_losses = Signal(8)
        # the last TRAIN_STEPS run, kept until a TRAIN_STEP or another run; its loss sum is of at most
        # MAX_RUN_STEPS losses of loss_bits each (docs/fixed-point.md section 7), not the reply's 64 bits
        run_kept = Signal()
        run_step, run_count = Signal(16), Signal(range(MAX_RUN_STEPS + 1))
        run_sum = Signal(cfg.loss_bits + (MAX_RUN_STEPS - 1).bit_length())
        # pass 1: reply data bytes of the requests checked so far; past MAX_PAYLOAD - 3 the frame is refused
        reply_due = Signal(range(MAX_PAYLOAD - 3 + 255 * vb + 1))
        skip = Signal(32)  # PARAM_SEEK: parameters still to walk past
        # the learner command in flight
        c_op, c_index, c_data = Signal(8), Signal(16), Signal(64)
        sent = Signal()  # the command was taken; waiting for its response
        then_reads = Signal()  # APPEND returns to READS (a bulk read) instead of the next request
        rlen_at_start = Signal.like(rlen)  # reply data before this request: a refused request adds none

        def one_of(v, codes):
            return Cat(*[v == c for c in codes]).any()

        # Looked up by the whole code byte once it is one of Code (any other byte may be past their end)
        fixed = Array([C(ARG_BYTES.get(c, 0), 4) for c in range(max(Code) + 1)])
        reply_bytes = Array([C(REPLY_BYTES.get(c, 0), 4) for c in range(max(Code) + 1)])

        m.d.comb += [self.cmd.payload.op.eq(c_op), self.cmd.payload.index.eq(c_index), self.cmd.payload.data.eq(c_data)]
        value_in = Signal(signed(8 * vb))  # a value gathered from the request, sign-extended below
        m.d.comb += value_in.eq(arg[:8 * vb])

        shapes = cfg.layer_shapes
        n_out = Array([C(o, 16) for o, _ in shapes])
        n_in = Array([C(i, 16) for _, i in shapes])
        row_len = Array([C(i + 1, 16) for _, i in shapes])
        base = Array([C(sum(o * (i + 1) for o, i in shapes[:l]), 32) for l in range(len(shapes))])

        def command(op, index=0, value=0):
            m.d.sync += [c_op.eq(op), c_index.eq(index), c_data.eq(value), sent.eq(0)]

        @contextmanager
        def response_ok():
            """Exchange the command; a refusal stops the frame with its status, else the body runs."""
            self._exchange(m, sent)
            with m.If(self.rsp.valid & sent):
                with m.If(self.rsp.payload.status != Status.OK):
                    m.d.sync += [status.eq(self.rsp.payload.status), rlen.eq(rlen_at_start)]
                    m.next = "STOP"
                with m.Else():
                    yield

        def take_byte():  # the argument byte on the request buffer's read port goes to its place in arg
            with m.Switch(got):
                for i in range(arg_bytes):
                    with m.Case(i):
                        m.d.sync += arg[8 * i:8 * i + 8].eq(rq_r.data)
            m.d.sync += [got.eq(got + 1), pos.eq(pos + 1), nbytes.eq(nbytes - 1)]

        with m.FSM() as fsm:
            m.d.comb += self.idle.eq(fsm.ongoing("RECEIVE"))
            with m.State("RECEIVE"):
                m.d.comb += [self.payload.ready.eq(1), self.frame.ready.eq(1)]
                with m.If(self.payload.valid):
                    m.d.comb += [rq_w.addr.eq(length), rq_w.data.eq(self.payload.payload), rq_w.en.eq(length <= MAX_PAYLOAD)]
                    m.d.sync += length.eq(length + 1)
                with m.If(self.frame.valid):
                    with m.If(self.frame.payload.status == FrameStatus.OK):
                        m.d.sync += [pos.eq(1), reply_due.eq(0)]
                        m.next = "CHECK"
                    with m.Else():
                        m.d.sync += [seq.eq(REFUSED_SEQ), status.eq(self.frame.payload.status.as_value()),
                                     done.eq(0), rlen.eq(0), pos.eq(0)]
                        m.next = "REPLY"
            # -- pass 1: does every request fit in the frame, and their replies in one? --
            with m.State("CHECK"):
                m.d.comb += rq_r.addr.eq(pos)
                with m.If(reply_due > MAX_PAYLOAD - 3):  # SEQ, STATUS, DONE and the data
                    m.next = "BAD_LENGTH"
                with m.Else():
                    m.next = "CHECK_CODE"
            with m.State("CHECK_CODE"):
                byte = rq_r.data
                m.d.comb += rq_r.addr.eq(pos + 1)
                with m.If((pos >= length) | ~one_of(byte, Code)):  # the end, or an unknown code: pass 2 stops there
                    m.d.sync += [pos.eq(1), done.eq(0), rlen.eq(0), status.eq(Status.OK)]
                    m.next = "RUN"
                with m.Elif(one_of(byte, BULK_WRITES)):
                    m.next = "CHECK_COUNT"
                with m.Else():
                    nxt = pos + 1 + fixed[byte]
                    with m.If(nxt > length):
                        m.next = "BAD_LENGTH"
                    with m.Elif(one_of(byte, BULK_READS)):
                        m.next = "CHECK_READ_COUNT"  # its reply length is in its argument
                    with m.Else():
                        m.d.sync += [pos.eq(nxt), reply_due.eq(reply_due + reply_bytes[byte])]
                        m.next = "CHECK"
            with m.State("CHECK_READ_COUNT"):  # the count byte of a bulk read is on the read port
                m.d.sync += [pos.eq(pos + 2), reply_due.eq(reply_due + rq_r.data * vb)]
                m.next = "CHECK"
            with m.State("CHECK_COUNT"):  # the count byte of a bulk request is on the read port
                nxt = pos + 2 + rq_r.data * vb
                with m.If((pos + 1 >= length) | (nxt > length)):
                    m.next = "BAD_LENGTH"
                with m.Else():
                    m.d.sync += pos.eq(nxt)
                    m.next = "CHECK"
            with m.State("BAD_LENGTH"):
                m.d.sync += [status.eq(4), done.eq(0), rlen.eq(0), pos.eq(0)]
                m.next = "REPLY"
            # -- pass 2: run the requests --
            with m.State("RUN"):
                m.d.comb += rq_r.addr.eq(pos)
                m.next = "RUN_CODE"
            with m.State("RUN_CODE"):
                byte = rq_r.data
                m.d.sync += code.eq(byte)
                with m.If(pos >= length):
                    m.d.sync += pos.eq(0)
                    m.next = "REPLY"
                with m.Elif(~one_of(byte, Code)):
                    m.d.sync += [status.eq(Status.UNKNOWN), pos.eq(0)]
                    m.next = "REPLY"
                with m.Else():
                    m.d.sync += [pos.eq(pos + 1), arg.eq(0), got.eq(0),
                                 nbytes.eq(Mux(one_of(byte, BULK_WRITES), 1, fixed[byte]))]
                    m.next = "ARGS"
            with m.State("ARGS"):  # gather nbytes argument bytes into arg, little-endian
                with m.If(nbytes == 0):
                    m.next = "ACT"
                with m.Else():
                    m.d.comb += rq_r.addr.eq(pos)
                    m.next = "ARGS_BYTE"
            with m.State("ARGS_BYTE"):
                take_byte()
                m.next = "ARGS"
            with m.State("ACT"):
                m.d.sync += [then_reads.eq(0),  # only a bulk read's values return to READS
                             rlen_at_start.eq(rlen)]
                with m.Switch(code):
                    for c, op in SIMPLE.items():
                        with m.Case(c):
                            if c == Code.SET:
                                command(op, arg[:8], arg[8:40])
                            elif c in (Code.SAMPLE_SEEK, Code.DATA_SEEK):
                                command(op, 0, arg[:16])
                            else:
                                command(op, arg[:8], 0)
                            m.next = "SIMPLE"
                    with m.Case(Code.NOP):
                        m.next = "NEXT"
                    with m.Case(Code.STEP_COUNT):
                        m.d.sync += [out_val.eq(steps_done), nbytes.eq(2)]
                        m.next = "APPEND"
                    with m.Case(Code.TRAIN_STEP):
                        with m.If(arg[:16] == steps_done):
                            command(Op.TRAIN_STEP)
                            m.next = "TRAIN"
                        # A resend of the last TRAIN_STEP; after a run, the step before STEP_COUNT was the
                        # run's, whose reply is TRAIN_STEPS': RANGE.
                        with m.Elif(stepped & ~run_kept & (arg[:16] == (steps_done - 1)[:16])):
                            m.d.sync += [out_val.eq(Cat(last_losses, C(1, 8))), nbytes.eq(2)]
                            m.next = "APPEND"
                        with m.Else():
                            m.d.sync += status.eq(Status.RANGE)
                            m.next = "STOP"
                    with m.Case(Code.TRAIN_STEPS):
                        if cfg.max_samples:
                            first, n_steps = arg[:16], arg[16:32]
                            with m.If(first == steps_done):
                                command(Op.TRAIN_STEPS, 0, n_steps)
                                m.next = "TRAIN_RUN"
                            # A resend: the reference also asks that steps_done be first + count, which holds
                            # while a run is kept (only a TRAIN_STEP, which drops it, or a run moves steps_done).
                            with m.Elif(run_kept & (first == run_step) & (n_steps == run_count)):
                                m.d.sync += [out_val.eq(run_sum), out_val[64:].eq(1), nbytes.eq(9)]  # repeated = 1
                                m.next = "APPEND"
                            with m.Else():
                                m.d.sync += status.eq(Status.RANGE)
                                m.next = "STOP"
                        else:  # no training set: the learner refuses every run, so none is ever kept
                            m.d.sync += status.eq(Status.RANGE)
                            m.next = "STOP"
                    with m.Case(Code.PARAM_SEEK):
                        layer, row, col = arg[:8], arg[8:24], arg[24:40]
                        with m.If((layer >= len(shapes)) | (row >= n_out[layer[:4]]) | (col > n_in[layer[:4]])):
                            m.d.sync += status.eq(Status.RANGE)
                            m.next = "STOP"
                        with m.Else():
                            m.d.sync += skip.eq(base[layer[:4]] + row * row_len[layer[:4]] + col)
                            command(Op.PARAM_REWIND)
                            m.next = "SEEK"
                    with m.Case(*BULK_READS):
                        m.d.sync += count.eq(arg[:8])
                        m.next = "READS"
                    with m.Case(*BULK_WRITES):
                        m.d.sync += count.eq(arg[:8])
                        m.next = "WRITES"
            # -- learner commands --
            with m.State("SIMPLE"):
                with response_ok():
                    m.d.sync += [out_val.eq(self.rsp.payload.data), nbytes.eq(reply_bytes[code])]
                    m.next = "APPEND"
            with m.State("TRAIN"):
                with response_ok():
                    m.d.sync += [steps_done.eq(steps_done + 1), stepped.eq(1), last_losses.eq(self.rsp.payload.data[:8]),
                                 run_kept.eq(0), out_val.eq(self.rsp.payload.data[:8]), nbytes.eq(2)]
                    m.next = "APPEND"
            if cfg.max_samples:
                with m.State("TRAIN_RUN"):  # c_data still holds the count the learner took (1..MAX_RUN_STEPS)
                    with response_ok():
                        m.d.sync += [steps_done.eq(steps_done + c_data[:16]), stepped.eq(1),
                                     run_kept.eq(1), run_step.eq(steps_done), run_count.eq(c_data),
                                     run_sum.eq(self.rsp.payload.data),
                                     out_val.eq(self.rsp.payload.data), nbytes.eq(9)]  # repeated = 0
                        m.next = "APPEND"
            with m.State("SEEK"):  # the rewind, then one PARAM_READ per parameter skipped (answers ignored)
                self._exchange(m, sent)
                with m.If(self.rsp.valid & sent):
                    with m.If(skip == 0):
                        m.next = "NEXT"
                    with m.Else():
                        m.d.sync += skip.eq(skip - 1)
                        command(Op.PARAM_READ)
            with m.State("READS"):
                with m.If(count == 0):
                    m.next = "NEXT"
                with m.Else():
                    command(Mux(code == Code.PARAM_READ, Op.PARAM_READ, Op.OUTPUT_READ))
                    m.next = "READ_ONE"
            with m.State("READ_ONE"):
                with response_ok():
                    m.d.sync += [out_val.eq(self.rsp.payload.data), nbytes.eq(vb), count.eq(count - 1),
                                 then_reads.eq(1)]
                    m.next = "APPEND"
            with m.State("WRITES"):
                with m.If(count == 0):
                    m.next = "NEXT"
                with m.Else():
                    m.d.sync += [nbytes.eq(vb), arg.eq(0), got.eq(0)]
                    m.next = "VALUE"
            with m.State("VALUE"):  # gather one value (vb bytes, little-endian, signed)
                with m.If(nbytes == 0):
                    m.next = "WRITE_ONE_SEND"
                with m.Else():
                    m.d.comb += rq_r.addr.eq(pos)
                    m.next = "VALUE_BYTE"
            with m.State("VALUE_BYTE"):
                take_byte()
                m.next = "VALUE"
            with m.State("WRITE_ONE_SEND"):
                with m.Switch(code):
                    for c, op in WRITE_OPS.items():
                        with m.Case(c):
                            command(op, 0, value_in.as_signed())
                m.next = "WRITE_ONE"
            with m.State("WRITE_ONE"):
                with response_ok():
                    m.d.sync += count.eq(count - 1)
                    m.next = "WRITES"
            with m.State("APPEND"):  # append nbytes of out_val to the reply; then the next value or request
                with m.If(nbytes == 0):
                    with m.If(then_reads):
                        m.next = "READS"
                    with m.Else():
                        m.next = "NEXT"
                with m.Else():
                    m.d.comb += [rp_w.addr.eq(rlen), rp_w.data.eq(out_val[:8]), rp_w.en.eq(1)]
                    m.d.sync += [rlen.eq(rlen + 1), out_val.eq(out_val >> 8), nbytes.eq(nbytes - 1)]
            with m.State("NEXT"):
                m.d.sync += done.eq(done + 1)
                m.next = "RUN"
            with m.State("STOP"):
                m.d.sync += pos.eq(0)
                m.next = "REPLY"
            # -- the reply: SEQ, STATUS, DONE, then the data --
            with m.State("REPLY"):  # pos counts reply bytes; SEQ is the request's first byte
                m.d.comb += rq_r.addr.eq(0)
                m.next = "REPLY_SEQ"
            with m.State("REPLY_SEQ"):
                with m.If(seq != REFUSED_SEQ):
                    m.d.sync += seq.eq(rq_r.data)
                m.next = "REPLY_BYTES"
            with m.State("REPLY_BYTES"):
                header = Array([seq, status, done])
                m.d.comb += rp_r.addr.eq(pos - 3)
                with m.If(pos < 3):
                    m.d.comb += [self.reply.valid.eq(1), self.reply.payload.data.eq(header[pos[:2]]),
                                 self.reply.payload.last.eq((pos == 2) & (rlen == 0))]
                    with m.If(self.reply.ready):
                        m.d.sync += pos.eq(pos + 1)
                        with m.If((pos == 2) & (rlen == 0)):
                            m.next = "FINISH"
                        with m.Elif(pos == 2):
                            m.next = "REPLY_DATA_FETCH"
                with m.Else():
                    m.next = "REPLY_DATA_FETCH"
            with m.State("REPLY_DATA_FETCH"):
                m.d.comb += rp_r.addr.eq(pos - 3)
                m.next = "REPLY_DATA"
            with m.State("REPLY_DATA"):
                m.d.comb += [rp_r.addr.eq(pos - 3), self.reply.valid.eq(1), self.reply.payload.data.eq(rp_r.data),
                             self.reply.payload.last.eq(pos - 3 == rlen - 1)]
                with m.If(self.reply.ready):
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(pos - 3 == rlen - 1):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "REPLY_DATA_FETCH"
            with m.State("FINISH"):
                m.d.sync += [length.eq(0), seq.eq(0)]
                m.next = "RECEIVE"
        return m

    def _exchange(self, m, sent):
        """Offer the command until taken, then take its response."""
        with m.If(~sent):
            m.d.comb += self.cmd.valid.eq(1)
            with m.If(self.cmd.ready):
                m.d.sync += sent.eq(1)
        with m.Else():
            m.d.comb += self.rsp.ready.eq(1)
