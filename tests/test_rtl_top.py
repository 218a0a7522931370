"""rtl.top.DeviceTop end to end at the pins: host frames as UART bits in, reply bits out, through the
real UART, SLIP decoder, dispatcher, learner and encoder, compared with the software device."""
import numpy as np

from rfsnn.sim.contract import protocol as P
from rfsnn.sim.endpoint import DeviceEndpoint
from rfsnn.rtl.top import DeviceTop
from rfsnn.rtl.link.uart import line_bits
from rfsnn.sim.contract.config import DeviceConfig
from rfsnn.sim.golden_device import GoldenDevice
from rfsnn.host.backends import random_problem
from rfsnn.sim.learner_sim import make_steps

CFG = DeviceConfig(layers=(2, 4, 1), t_steps=4, max_batch=8, max_directions=2)
DIVISOR = 4  # 3 Mbaud at 12 MHz: the tightest bit time the UART is built for


def test_frames_at_the_pins_get_the_software_devices_replies(simulate):
    params, x, t = random_problem(CFG, 3, seed=4)
    sp = make_steps(CFG, 3, 1, seed=2, directions=2)[0]
    vb = P.value_bytes(CFG)
    rows = np.concatenate([x, t], axis=1).ravel()
    frames = [
        [P.info(0), P.step_count()],
        [P.param_seek(0), P.param_write([v for p in params for v in p.ravel()])],
        [P.set_register(0, 3), P.sample_seek(0), P.sample_write(rows), P.infer()],
        [P.set_register(1, sp.seed), P.set_register(2, 2), P.set_register(4, sp.gain_mant),
         P.set_register(5, sp.gain_shift), P.set_register(6, sp.clip), P.set_register(7, 8), P.train_step(0),
         P.read_loss(0), P.read_step(1)],
        [P.param_seek(0), P.param_read(17)],
    ]
    payloads = [P.encode_request_payload(n, f, vb) for n, f in enumerate(frames)]
    # Line noise first (refused, then the link resynchronises), then one frame at a time, each after the
    # previous reply (test_frames_sent_back_to_back_queue_in_the_receive_fifo sends them back to back).
    wires = [b"\x00\x13" + bytes([P.END])] + [P.frame(p) for p in payloads]
    endpoint = DeviceEndpoint(GoldenDevice(CFG).execute, CFG)
    expected = [P.Deframer().feed(endpoint.receive(w)) for w in wires]
    dut = DeviceTop(CFG, DIVISOR, 1, 2)
    replies = []

    async def bench(ctx):
        deframer = P.Deframer()
        for w in wires:
            for bit in line_bits(w):
                ctx.set(dut.rx, bit)
                await ctx.tick().repeat(DIVISOR)
            ctx.set(dut.rx, 1)
            got = []
            for _ in range(400):  # bytes of this reply, each from its start bit, sampled mid-bit
                await ctx.tick().until(dut.tx == 0)
                await ctx.tick().repeat(DIVISOR + DIVISOR // 2)
                byte = 0
                for i in range(8):
                    byte |= ctx.get(dut.tx) << i
                    await ctx.tick().repeat(DIVISOR)
                assert ctx.get(dut.tx) == 1, "stop bit"
                got = deframer.feed(bytes([byte]))
                if got:
                    break
            replies.append(got)
        assert ctx.get(dut.link_errors) == 0  # no overrun, no framing error

    simulate(dut, bench)
    assert [[r.payload for r in g] for g in replies] == [[r.payload for r in e] for e in expected]
    decoded = [P.decode_reply(g[0].payload) for g in replies]
    assert decoded[0].status == P.LinkStatus.BAD_LENGTH and decoded[0].seq == 0xFF  # the noise
    assert [r.status for r in decoded[1:]] == [P.LinkStatus.OK] * 5
    assert len(P.decode_values(decoded[-1].data, vb)) == CFG.n_params  # the trained weights, read back


def test_frames_sent_back_to_back_queue_in_the_receive_fifo(simulate):
    """Without waiting for replies (pipelining): the second and third frames arrive while the device is
    still answering the first; they wait in the FIFO and get their replies, in order, and `busy` falls
    once everything is answered."""
    params, _, _ = random_problem(CFG, 1, seed=5)
    vb = P.value_bytes(CFG)
    frames = [[P.param_seek(0), P.param_write([v for p in params for v in p.ravel()])],
              [P.info(i) for i in range(12)],
              [P.param_seek(0), P.param_read(CFG.n_params)]]
    wire = b"".join(P.frame(P.encode_request_payload(n, f, vb)) for n, f in enumerate(frames))
    endpoint = DeviceEndpoint(GoldenDevice(CFG, 1, 2).execute, CFG)  # lanes as built: INFO reports them
    expected = P.Deframer().feed(endpoint.receive(wire))
    dut = DeviceTop(CFG, DIVISOR, 1, 2)
    got = []

    async def send(ctx):
        for bit in line_bits(wire):
            ctx.set(dut.rx, bit)
            await ctx.tick().repeat(DIVISOR)
        ctx.set(dut.rx, 1)

    async def receive(ctx):
        deframer = P.Deframer()
        while len(got) < len(frames):
            for _ in range(20_000):  # a lost frame would leave us waiting forever
                if ctx.get(dut.tx) == 0:
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"{len(got)} of {len(frames)} replies; then 20k clocks of silence")
            await ctx.tick().repeat(DIVISOR + DIVISOR // 2)
            byte = 0
            for i in range(8):
                byte |= ctx.get(dut.tx) << i
                await ctx.tick().repeat(DIVISOR)
            got.extend(deframer.feed(bytes([byte])))
        await ctx.tick().repeat(4 * DIVISOR)
        assert ctx.get(dut.busy) == 0 and ctx.get(dut.link_errors) == 0

    simulate(dut, send, receive)
    assert [r.payload for r in got] == [r.payload for r in expected]
    assert [P.decode_reply(r.payload).status for r in got] == [P.LinkStatus.OK] * 3
    assert P.decode_values(P.decode_reply(got[2].payload).data, vb) == [v for p in params for v in p.ravel()]
