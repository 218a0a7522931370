"""rtl.dispatcher.Dispatcher + rtl.learner.Learner answer request frames exactly as the software device
(sim.endpoint.DeviceEndpoint over sim.golden_device.GoldenDevice) does, reply for reply."""
import dataclasses

import numpy as np
from amaranth import Module
from amaranth.lib import stream, wiring

from rfsnn.sim.contract import protocol as P
from rfsnn.sim.endpoint import DeviceEndpoint
from rfsnn.rtl.link.dispatcher import Dispatcher
from rfsnn.rtl.link.framing import PAYLOAD_BYTE, FrameStatus, verdict_layout
from rfsnn.rtl.learner import Learner
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden_device import GoldenDevice
from rfsnn.host.backends import random_problem
from rfsnn.sim.learner_sim import make_steps

CFG = DeviceConfig(layers=(2, 5, 2), t_steps=8, max_batch=16, max_directions=4)


class Top(wiring.Component):
    def __init__(self, cfg=CFG):
        self.cfg = cfg
        self.disp = Dispatcher(cfg)
        super().__init__({"payload": wiring.In(stream.Signature(8)),
                          "frame": wiring.In(stream.Signature(verdict_layout(P.MAX_PAYLOAD))),
                          "reply": wiring.Out(stream.Signature(PAYLOAD_BYTE))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.disp = disp = self.disp
        m.submodules.learner = learner = Learner(self.cfg, 1, 2)
        wiring.connect(m, disp.cmd, learner.cmd)
        wiring.connect(m, learner.rsp, disp.rsp)
        wiring.connect(m, wiring.flipped(self.payload), disp.payload)
        wiring.connect(m, wiring.flipped(self.frame), disp.frame)
        wiring.connect(m, disp.reply, wiring.flipped(self.reply))
        return m


def setup_frames():
    """Weights, a batch of 5 and the step registers (two directions), and the step's reads."""
    params, x, t = random_problem(CFG, 5, seed=8)
    steps = make_steps(CFG, 5, 2, seed=3, directions=2)
    rows = np.concatenate([x, t], axis=1).ravel()
    flat = [v for p in params for v in p.ravel()]
    load = [
        [P.param_seek(0), P.param_write(flat[:15])],
        [P.param_seek(1, 0, 0), P.param_write(flat[15:])],
        [P.param_seek(0, 2, 1), P.param_read(6)],
        [P.set_register(0, 5), P.sample_seek(0), P.sample_write(rows)],
    ]
    registers = [P.set_register(1, steps[0].seed), P.set_register(2, 2), P.set_register(4, steps[0].gain_mant),
                 P.set_register(5, steps[0].gain_shift), P.set_register(6, steps[0].clip), P.set_register(7, 8)]
    return load, registers, [P.read_loss(0), P.read_loss(3), P.read_step(1)]


def scripts():
    """Request payloads (SEQ + requests) and raw refusals, as a host would send them."""
    vb = P.value_bytes(CFG)
    load, registers, reads = setup_frames()
    frames = [
        [P.info(0), P.info(3), P.step_count()],
        *load,
        [P.infer(), P.sample_seek(0), P.output_read(10)],
        [P.train_step(0xFFFF)],  # no step has run: not a resend of step 65535, RANGE
        registers + [P.train_step(0)] + reads,
        [P.train_step(0)],  # a resent step: answered, not run
        [P.train_step(5)],  # out of step: RANGE
        [P.param_seek(0, 9)],  # no such row: RANGE
        [P.set_register(0, 99), P.nop()],  # batch beyond max_batch: RANGE, DONE 0
        [P.param_seek(1, 1, 0), P.param_read(10)],  # runs past the last parameter: RANGE mid-request
        [P.read_counter(3), P.clear_counters(), P.read_counter(3)],
    ]
    payloads = [P.encode_request_payload(n, f, vb) for n, f in enumerate(frames)]
    payloads.append(bytes([20, P.Code.NOP, 0x7E, P.Code.NOP]))  # an unknown code after one NOP
    payloads.append(bytes([21]) + P.param_write([1, 2, 3]).encode(vb)[:-1])  # truncated: BAD_LENGTH
    payloads += overlong_reply_payloads(vb)
    return payloads


def raw_payload(seq, requests, vb):
    """A payload the host's encoder would refuse to build (its reply would not fit)."""
    return bytes([seq]) + b"".join(r.encode(vb) for r in requests)


def overlong_reply_payloads(vb):
    """Frames around the limit on reply length: 3 + reply data <= MAX_PAYLOAD runs, more is BAD_LENGTH
    and runs nothing (not the TRAIN_STEP at its start either: STEP_COUNT after it still says 1)."""
    infos = [P.info(0)] * 63  # 3 + 63 x 4 = 255: just fits
    return [raw_payload(30, infos, vb),
            raw_payload(31, infos + [P.step_count()], vb),  # 257: refused
            raw_payload(32, [P.train_step(1), P.param_seek(0), P.param_read(126)], vb),  # 3 + 2 + 252
            raw_payload(33, [P.step_count()], vb),
            raw_payload(34, [P.param_seek(0), P.param_read(126)], vb),  # fits: RANGE past the last parameter
            raw_payload(35, [P.nop()] + infos + [P.step_count()], vb),  # 257 in a frame of 66 requests
            # after an unknown code nothing runs, and only the requests before it count
            raw_payload(36, infos, vb) + bytes([0x7E, P.Code.STEP_COUNT])]


def run_dispatcher(simulate, payloads, set_steps={}, refused_frame=True, cfg=CFG):
    """The RTL's reply to each payload (and to one frame refused by the decoder, if refused_frame);
    set_steps {n: s}: STEP_COUNT is set to s before payload n, as if the steps between had been done
    (a testbench cannot run 65,536 steps to see the step number wrap)."""
    dut = Top(cfg)
    got = []

    async def bench(ctx):
        ctx.set(dut.reply.ready, 1)
        for n, p in enumerate(payloads + ([None] if refused_frame else [])):
            if n in set_steps:
                ctx.set(dut.disp.steps_done, set_steps[n])
            for b in (p or b"\x01\x02"):
                ctx.set(dut.payload.payload, b)
                ctx.set(dut.payload.valid, 1)
                await ctx.tick().until(dut.payload.ready)
            ctx.set(dut.payload.valid, 0)
            ctx.set(dut.frame.payload.status, FrameStatus.OK if p is not None else FrameStatus.BAD_CRC)
            ctx.set(dut.frame.payload.length, len(p or b"\x01\x02"))
            ctx.set(dut.frame.valid, 1)
            await ctx.tick().until(dut.frame.ready)
            ctx.set(dut.frame.valid, 0)
            reply = bytearray()
            for _ in range(100_000):  # a frame of these scripts takes a few thousand clocks; a hang fails
                await ctx.tick()
                if ctx.get(dut.reply.valid):
                    reply.append(ctx.get(dut.reply.payload.data))
                    if ctx.get(dut.reply.payload.last):
                        break
            else:
                raise AssertionError(f"no complete reply to frame {len(got)}")
            got.append(bytes(reply))

    simulate(dut, bench)
    return got


def test_dispatcher_answers_like_the_software_device(simulate):
    payloads = scripts()
    gd = GoldenDevice(CFG)
    endpoint = DeviceEndpoint(gd.execute, CFG)
    expected = [endpoint._run(p) for p in payloads] + [P.encode_reply(0xFF, P.LinkStatus.BAD_CRC, 0, b"")]
    got = run_dispatcher(simulate, payloads)
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"frame {n}: rtl {P.decode_reply(g)}, software {P.decode_reply(e)}"
    assert len(got) == len(expected)
    statuses = {P.decode_reply(e).status for e in expected}
    assert statuses == {P.LinkStatus.OK, P.LinkStatus.RANGE, P.LinkStatus.UNKNOWN, P.LinkStatus.BAD_LENGTH,
                        P.LinkStatus.BAD_CRC}
    overlong = {P.decode_reply(e).seq: P.decode_reply(e) for e in expected[-8:-1]}
    assert [(r.status, r.done, len(r.data)) for r in overlong.values()] == [
        (P.LinkStatus.OK, 63, 252), (P.LinkStatus.BAD_LENGTH, 0, 0), (P.LinkStatus.BAD_LENGTH, 0, 0),
        (P.LinkStatus.OK, 1, 2), (P.LinkStatus.RANGE, 1, 0), (P.LinkStatus.BAD_LENGTH, 0, 0),
        (P.LinkStatus.UNKNOWN, 63, 252)]
    assert overlong[33].data == (1).to_bytes(2, "little")  # the refused frame's TRAIN_STEP did not run
    assert max(len(g) for g in got) == P.MAX_PAYLOAD  # no reply longer than a frame holds


def test_a_resent_step_at_the_wrap_of_the_step_number_is_answered_not_refused(simulate):
    """STEP_COUNT wraps 65535 -> 0: a resent TRAIN_STEP(65535) then is a resend (repeated = 1), which
    "no step yet" (also STEP_COUNT 0) must not be taken for."""
    vb = P.value_bytes(CFG)
    load, registers, reads = setup_frames()
    frames = load + [registers + [P.train_step(0xFFFE)] + reads, [P.train_step(0xFFFF)], [P.train_step(0xFFFF)],
                     [P.step_count()], [P.train_step(0)], [P.train_step(0xFFFF)], [P.train_step(0)]]
    payloads = [P.encode_request_payload(n, f, vb) for n, f in enumerate(frames)]
    endpoint = DeviceEndpoint(GoldenDevice(CFG).execute, CFG)
    endpoint.steps_done = 0xFFFE
    expected = [endpoint._run(p) for p in payloads]
    got = run_dispatcher(simulate, payloads, set_steps={0: 0xFFFE}, refused_frame=False)
    assert got == expected
    passes = P.decode_reply(expected[len(load)]).data[0]  # of each step: the losses it computed
    ok, rng = P.LinkStatus.OK, P.LinkStatus.RANGE
    assert [(r.status, r.data) for r in map(P.decode_reply, expected[len(load) + 1:])] == [
        (ok, bytes([passes, 0])), (ok, bytes([passes, 1])),  # 65535 runs; resent, it is answered "repeated"
        (ok, b"\x00\x00"),  # STEP_COUNT has wrapped
        (ok, bytes([passes, 0])), (rng, b""), (ok, bytes([passes, 1]))]  # step 0 runs; 65535 is past
    assert endpoint.steps_done == 1


def software_replies(payloads, set_steps={}, cfg=CFG):
    """The software device's reply to each payload, STEP_COUNT set as run_dispatcher sets it."""
    endpoint = DeviceEndpoint(GoldenDevice(cfg).execute, cfg)
    out = []
    for n, p in enumerate(payloads):
        endpoint.steps_done = set_steps.get(n, endpoint.steps_done)
        out.append(endpoint._run(p))
    return out


def assert_same_replies(got, expected):
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"frame {n}: rtl {P.decode_reply(g)}, software {P.decode_reply(e)}"
    assert len(got) == len(expected)


def summary(replies):
    return [(r.status, r.done, len(r.data)) for r in map(P.decode_reply, replies)]


def test_every_code_is_decoded_whole_and_every_other_byte_is_unknown(simulate):
    """Codes 0x10.. are told apart by their whole byte (tables indexed by the low 4 bits gave DATA_SEEK
    NOP's arguments, TRAIN_STEPS SET's, DATA_WRITE INFO's); any other byte ends the frame's requests, and
    those before it run. The first pass checks the new codes' arguments and replies from the contract's
    table. No frame here needs the learner's DATA_* or TRAIN_STEPS (TRAIN_STEPS(9, ..) is out of step)."""
    vb = P.value_bytes(CFG)
    infos, far = [P.info(0)] * 60, P.train_steps(9, 1)
    payloads = [
        bytes([40]) + P.info(0).encode(vb) + bytes([0x13]),  # UNKNOWN, though its low 4 bits are PARAM_SEEK's
        bytes([41]) + P.step_count().encode(vb) + bytes([0x1A, 0, 0]),  # nor TRAIN_STEP(0)
        bytes([42, P.Code.NOP, 0x8F]),
        bytes([43]) + P.info(1).encode(vb) + bytes([0xFF]) + P.info(0).encode(vb) * 63,
        bytes([44, 0xFF, P.Code.NOP]),
        bytes([45, P.Code.NOP, P.Code.DATA_SEEK]),  # its argument runs past the end: BAD_LENGTH, not a NOP
        bytes([46]) + far.encode(vb)[:-1],  # count cut short
        bytes([47]) + far.encode(vb),  # TRAIN_STEPS' 4 argument bytes, not SET's 5
        bytes([48]) + P.data_write([3, -4]).encode(vb)[:-vb],  # the second value is missing
        bytes([49, P.Code.DATA_WRITE, 0, P.Code.NOP, P.Code.STEP_COUNT]),  # no values: no learner command
        raw_payload(50, [far] * 28, vb),  # 3 + 28 x 9 = 255: fits
        raw_payload(51, [far] * 29, vb),  # 264: refused
        raw_payload(52, infos + [far], vb),  # 3 + 240 + 9 = 252
        raw_payload(53, infos + [P.info(0), far], vb),  # 256: refused, the INFOs do not run
    ]
    expected = software_replies(payloads)
    assert_same_replies(run_dispatcher(simulate, payloads, refused_frame=False), expected)
    ok, rng, unknown, bad = P.LinkStatus.OK, P.LinkStatus.RANGE, P.LinkStatus.UNKNOWN, P.LinkStatus.BAD_LENGTH
    assert summary(expected) == [
        (unknown, 1, 4), (unknown, 1, 2), (unknown, 1, 0), (unknown, 1, 4), (unknown, 0, 0),
        (bad, 0, 0), (bad, 0, 0), (rng, 0, 0), (bad, 0, 0), (ok, 3, 2),
        (rng, 0, 0), (bad, 0, 0), (rng, 60, 240), (bad, 0, 0)]


def training_set_frames():
    """Six samples into the device's training set, and the registers TRAIN_STEPS draws batches with."""
    _, registers, _ = setup_frames()
    _, x, t = random_problem(CFG, 6, seed=5)
    rows = np.concatenate([x, t], axis=1).ravel()
    return [
        [P.info(0), P.data_seek(0), P.data_write(rows[:10])],  # ends inside sample 2
        [P.data_write(rows[10:16]), P.step_count(), P.data_seek(4), P.data_write(rows[16:])],
        [P.data_seek(CFG.max_samples)],  # beyond the set: RANGE
        [P.set_register(0, 4), P.set_register(9, 6), P.set_register(10, 0x1234_5678)] + registers,
    ]


def test_train_steps_runs_are_answered_like_the_software_device(simulate):
    """Runs of 1 and 3 steps; a resend is answered (repeated = 1, the stored sum) until a TRAIN_STEP or
    another run; any other step number is RANGE, and so are the counts the learner refuses (0, 257)."""
    vb = P.value_bytes(CFG)
    load, _, reads = setup_frames()
    frames = load + training_set_frames() + [
        [P.train_steps(0, 1)],
        [P.step_count(), P.train_steps(1, 3), P.step_count()] + reads,
        [P.train_steps(1, 3), P.step_count()],  # resent: answered, not run
        [P.train_steps(0, 1)],  # an older run: RANGE
        [P.train_steps(1, 2)],  # not the run kept: another count,
        [P.train_steps(2, 3)],  # another first step
        [P.train_steps(5, 1)],  # out of step
        [P.info(0), P.train_steps(4, 0)],  # the learner refuses: RANGE, DONE 1
        [P.train_steps(4, 257)],
        [P.nop(), P.train_steps(1, 3), P.read_loss(0)],  # refusals leave the run kept
        [P.train_step(4)],  # runs, and drops the kept run
        [P.train_steps(1, 3)],
        [P.train_steps(5, 3), P.param_seek(0), P.param_read(15), P.step_count()],
        [P.train_step(7)],  # the last step of that run, resent as a TRAIN_STEP: RANGE (the step was the run's)
    ]
    payloads = [P.encode_request_payload(n, f, vb) for n, f in enumerate(frames)]
    expected = software_replies(payloads)
    assert_same_replies(run_dispatcher(simulate, payloads, refused_frame=False), expected)
    ok, rng = P.LinkStatus.OK, P.LinkStatus.RANGE
    runs = [P.decode_reply(e) for e in expected[len(load) + 4:]]
    assert [(r.status, r.done) for r in runs] == [(ok, 1), (ok, 6), (ok, 2), (rng, 0), (rng, 0), (rng, 0), (rng, 0),
                                                  (rng, 1), (rng, 0), (ok, 3), (ok, 1), (rng, 0), (ok, 4), (rng, 0)]
    run_of_3, resent = runs[1].data[2:11], runs[2].data[:9]
    assert run_of_3[8] == 0 and resent == run_of_3[:8] + b"\x01" and runs[9].data[:9] == resent
    assert runs[12].data[-2:] == (8).to_bytes(2, "little")


def test_a_run_kept_over_the_wrap_of_the_step_number_is_answered_and_a_train_step_drops_it(simulate):
    """A run from step 65534 of 3 ends at STEP_COUNT 1 and, resent, is answered. After a TRAIN_STEP,
    the same run is RANGE even with STEP_COUNT back at 1 (set, as if 65,535 more steps had run)."""
    vb = P.value_bytes(CFG)
    load, _, _ = setup_frames()
    frames = load + training_set_frames() + [
        [P.train_steps(0xFFFE, 3)], [P.train_steps(0xFFFE, 3), P.step_count()],
        [P.train_step(1)], [P.train_steps(0xFFFE, 3)]]
    payloads = [P.encode_request_payload(n, f, vb) for n, f in enumerate(frames)]
    set_steps = {0: 0xFFFE, len(frames) - 1: 1}
    expected = software_replies(payloads, set_steps)
    assert_same_replies(run_dispatcher(simulate, payloads, set_steps, refused_frame=False), expected)
    run, resent, step, dropped = map(P.decode_reply, expected[-4:])
    assert run.status == P.LinkStatus.OK and run.data[8] == 0
    assert resent.data == run.data[:8] + b"\x01" + (1).to_bytes(2, "little")
    assert step.status == P.LinkStatus.OK and step.data[1] == 0  # the TRAIN_STEP ran
    assert dropped.status == P.LinkStatus.RANGE


def test_the_software_device_bulk_path_answers_like_its_per_command_path():
    """GoldenDevice's vectorised pointer commands (used by rfsnn train) change nothing but speed."""
    plain, fast = GoldenDevice(CFG), GoldenDevice(CFG)
    a, b = DeviceEndpoint(plain.execute, CFG), DeviceEndpoint(fast.execute, CFG, bulk=fast)
    vb = P.value_bytes(CFG)
    train = [P.encode_request_payload(n, f, vb) for n, f in enumerate(training_set_frames())]
    for p in scripts() + train:
        assert a._run(p) == b._run(p)
    assert all(np.array_equal(x, y) for x, y in zip(plain.params, fast.params))
    assert np.array_equal(plain.x, fast.x) and np.array_equal(plain.t, fast.t) and np.array_equal(plain.y, fast.y)
    assert np.array_equal(plain.set_x, fast.set_x) and np.array_equal(plain.set_t, fast.set_t)


def test_without_a_training_set_every_run_is_refused(simulate):
    """A build without a set memory (max_samples 0, the iCEBreaker's) keeps no run: the dispatcher refuses
    TRAIN_STEPS itself, as the software device's learner would, and the set's writes are refused too."""
    cfg = dataclasses.replace(CFG, max_samples=0)
    vb = P.value_bytes(cfg)
    load, registers, _ = setup_frames()
    frames = load + [registers + [P.train_step(0)], [P.nop(), P.train_steps(1, 1)], [P.train_steps(0, 1)],
                     [P.step_count(), P.data_seek(0)], [P.data_write([1, 2, 3])], [P.train_step(1)],
                     [P.train_step(1), P.step_count()]]
    payloads = [P.encode_request_payload(n, f, vb) for n, f in enumerate(frames)]
    expected = software_replies(payloads, cfg=cfg)
    assert_same_replies(run_dispatcher(simulate, payloads, refused_frame=False, cfg=cfg), expected)
    rng = P.LinkStatus.RANGE
    assert [(P.decode_reply(e).status, P.decode_reply(e).done) for e in expected[len(load) + 1:len(load) + 5]] == [
        (rng, 1), (rng, 0), (rng, 1), (rng, 0)]
