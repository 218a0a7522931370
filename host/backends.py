"""Training backends behind one small interface, so the training loop cannot tell them apart.

- golden: the device itself, in software (rfsnn.sim.golden), driven through the host link's byte protocol:
  fixed point, weight perturbation on chip;
- rtl: the gateware on a Verilog simulator (a virtual board, sim.virtual_board), over a pseudo-terminal;
- serial: a board on a serial port;
  (the three are one DeviceBackend: the same host code and bytes, on different transports)
- float-wp / float-rfg / float-bp: floating-point references of the same network (host.floatnet):
  weight perturbation, randomized forward-mode gradient, back-propagation through time.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from rfsnn.sim.contract import streams
from rfsnn.sim.contract.config import MAX_RUN_STEPS, DeviceConfig, StepParams, forward_passes, gain_for
from rfsnn.sim.contract.fixed import dequantize, quantize
from rfsnn.sim.endpoint import DeviceEndpoint
from rfsnn.sim.golden import Counters, base_loss, join_params, split_params
from rfsnn.sim.golden_device import GoldenDevice

from . import estimators, floatnet, optim
from .dataset import BatchSampler
from .link import Device, LoopbackTransport, SerialTransport

DEVICE_BACKENDS = ("golden", "rtl", "serial")
BACKENDS = (*DEVICE_BACKENDS, "float-bp", "float-rfg", "float-wp")
IN_PROCESS_BACKENDS = ("golden", "float-bp", "float-rfg", "float-wp")  # no board or simulator needed


@dataclass
class LinkOptions:
    """How to reach the device of the rtl and serial backends (not part of a run's settings)."""

    port: str | None = None  # serial
    baud: int = 3_000_000
    timeout: float | None = None  # seconds per reply; None: 2 s for a board, 120 s for a virtual board
    retries: int = 3
    simulator: str = "verilator"  # rtl
    neuron_lanes: int = 1
    sample_lanes: int = 8
    clock_mhz: float = 12.0
    build_dir: str | None = None

    def validate(self) -> None:
        """Refuse (ValueError, naming the option) a setting no link can use."""
        import math

        def positive(v):
            return isinstance(v, (int, float)) and math.isfinite(v) and v > 0

        if self.timeout is not None and not positive(self.timeout):
            raise ValueError(f"--timeout {self.timeout!r}: seconds to wait for a reply must be a positive number")
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 100):
            raise ValueError(f"--retries {self.retries!r}: resends of a frame must be an integer in 0..100")
        if not (isinstance(self.baud, int) and self.baud > 0):
            raise ValueError(f"--baud {self.baud!r}: must be a positive integer, e.g. 3000000")
        for option, lanes in (("--neuron-lanes", self.neuron_lanes), ("--sample-lanes", self.sample_lanes)):
            if not (isinstance(lanes, int) and lanes >= 1):
                raise ValueError(f"{option} {lanes!r}: must be an integer >= 1")
        if not positive(self.clock_mhz):
            raise ValueError(f"clock {self.clock_mhz!r} MHz: must be a positive number")


def sigma_lsb(sigma: float, cfg: DeviceConfig) -> int:
    """The perturbation scale a device runs: sigma in weight LSBs, to the nearest LSB (at least one)."""
    return max(1, int(round(sigma * (1 << cfg.w_frac))))


class Backend:
    """One training run's model. `attach` gives it the training set, already scaled to the device's
    ranges (inputs in [-1, 1], targets divided by the target scale); `train` runs steps on batches the
    backend draws from it and returns (step, loss) entries: the mean squared error in those units before
    the update, per step or, where a device runs many steps at once, per run of steps."""

    name: str
    forward_passes: int = 0
    max_run: int = 1  # steps one train() call may take

    def attach(self, x_dev: np.ndarray, y_dev: np.ndarray) -> None: ...

    def train(self, first: int, count: int, lr_of: Callable[[int], float]) -> list[tuple[int, float]]:
        """Steps first .. first + count - 1, step i with learning rate lr_of(i)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device (a virtual board's simulator, a serial port)."""

    def predict_dev(self, x_dev: np.ndarray) -> np.ndarray: ...

    def float_params(self) -> list[tuple[np.ndarray, np.ndarray]]: ...

    def weights_npz(self) -> dict[str, np.ndarray]:
        out = {}
        for l, (W, b) in enumerate(self.float_params(), start=1):
            out[f"W{l}"], out[f"b{l}"] = W, b
        return out

    def counters(self) -> dict:
        return {"forward_passes": self.forward_passes}

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """What a checkpoint holds beyond the weights so that the run continues exactly as it would have
        (RNG states, optimiser state, work counted so far): JSON-able values, and arrays."""
        return {}, {}

    def load_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Continue from state() of an earlier process (after load_weights)."""


class DeviceBackend(Backend):
    """A device driven through the host link: the byte protocol of docs/protocol.md (framing, CRC,
    requests), whatever carries the bytes. The weights stay on the device; they are read back when asked
    for. Batches follow the contract's batch stream (docs/fixed-point.md section 7) in either of two
    modes, with the same bits:
    - resident (the training set fits the device's set memory): the set is uploaded once and each run
      of steps is one TRAIN_STEPS request; the device draws its batches;
    - streamed (a larger set, or a device without a set memory): the host draws the same batches and
      sends each with its TRAIN_STEP, followed by the next step's batch, so that upload overlaps the
      step's compute (the device's receive FIFO holds it).
    A run of steps shares one learning rate (one gain register), so `train` takes one rate per call."""

    max_run = MAX_RUN_STEPS

    def __init__(self, name: str, cfg: DeviceConfig, init: list[tuple[np.ndarray, np.ndarray]], settings,
                 seed: int, transport, timeout: float = 1.0, retries: int = 3, on_close=None):
        self.name, self.cfg, self.s = name, cfg, settings
        self.transport, self._on_close = transport, on_close
        self.device = Device(transport, expect=cfg, timeout=timeout, retries=retries)
        self._write(device_weights(init, cfg))
        self.sigma_lsb = sigma_lsb(settings.sigma, cfg)
        self.clip = min(cfg.step_range[1], int(round(settings.clip * (1 << (cfg.w_frac + cfg.step_frac)))))
        self.data_state = int(np.random.default_rng([seed, 0xDA7A]).integers(1 << 32))  # the batch stream's
        self.set_x = self.set_t = None  # the training set, device integers
        self.resident = False
        self.passes = 0
        self.samples = 0  # forward passes x batch, summed over steps
        self.steps_done = 0
        self._loaded_for: int | None = None  # the step whose batch the sample memory holds
        # Device counts that are not this run's training work: what the device had counted before the
        # run, and what evaluations (predict_dev) spend.
        dev = self.device.counters()
        self._evaluation = {"spikes": np.array([dev[f"spikes{h}"] for h in range(len(cfg.layers) - 2)], np.int64),
                            "spike_fanout": dev["spike_fanout"]}

    def _write(self, params) -> None:
        self.device.write_params(params)
        self._params = [np.asarray(p, np.int64) for p in params]

    @property
    def params(self) -> list[np.ndarray]:
        """The device's weights (read back over the link after training steps)."""
        if self._params is None:
            self._params = self.device.read_params()
        return self._params

    def _quantize(self, x_dev, y_dev):
        cfg = self.cfg
        return (quantize(x_dev, cfg.x_frac, cfg.x_bits, "input"),
                quantize(y_dev.reshape(len(y_dev), -1), cfg.w_frac, cfg.y_bits, "target"))

    def attach(self, x_dev, y_dev, stream: bool = False):
        """stream: send every batch even if the set would fit the device (the same bits, for comparison)."""
        self.set_x, self.set_t = self._quantize(x_dev, y_dev)  # refused here, before anything is sent
        self.resident = not stream and len(self.set_x) <= self.cfg.max_samples
        if self.resident:
            self.device.upload_set(self.set_x, self.set_t)

    def _step_params(self, lr: float, batch: int, step_index: int) -> StepParams:
        """Step `step_index`'s parameters at learning rate lr; its seed (0 here) comes from the batch stream."""
        cfg, s = self.cfg, self.s
        per_layer = s.directions / cfg.n_layers if s.scope == "layerwise" else s.directions  # as float-wp averages
        mant, shift = gain_for(lr, self.sigma_lsb, batch, per_layer, s.difference == "central", cfg)
        sp = StepParams(seed=0, directions=s.directions, sigma=self.sigma_lsb, gain_mant=mant, gain_shift=shift,
                        clip=self.clip, noise=s.noise, difference=s.difference, scope=s.scope,
                        layer_start=streams.layer_start_after(0, step_index, s.directions, cfg.n_layers),
                        stochastic_rounding=s.stochastic_rounding)
        sp.validate(cfg)
        return sp

    def train(self, first, count, lr_of):
        cfg, batch = self.cfg, self.s.batch
        if not 1 <= count <= self.max_run:
            raise ValueError(f"a run of {count} steps; a device runs 1..{self.max_run} at once")
        sp = self._step_params(lr_of(first), batch, first)
        if self.resident:
            total = self.device.train_steps(sp, batch, count, self.data_state)
            n_losses = forward_passes(sp.directions, sp.difference)
            self.data_state = streams.state_after(self.data_state, count, batch, cfg)
        else:
            total = 0
            draw = streams.draw_step(self.data_state, len(self.set_x), batch, cfg)
            for i in range(first, first + count):
                after = streams.draw_step(draw.next_state, len(self.set_x), batch, cfg)
                reply = self.device.train_step(
                    replace(sp, seed=draw.seed, layer_start=streams.layer_start_after(0, i, sp.directions, cfg.n_layers)),
                    batch=(self.set_x[draw.indices], self.set_t[draw.indices]),
                    next_batch=(self.set_x[after.indices], self.set_t[after.indices]), loaded=self._loaded_for == i)
                self._loaded_for = i + 1
                total += base_loss(reply.losses, sp.difference)
                n_losses = len(reply.losses)
                self.data_state, draw = draw.next_state, after
        self._params = None
        self.passes += count * n_losses
        self.samples += count * n_losses * batch
        self.steps_done += count
        return [(first + count - 1, total / float(1 << (2 * cfg.w_frac)) / batch / count)]

    @property
    def forward_passes(self) -> int:
        return self.passes

    def predict_dev(self, x_dev):
        cfg = self.cfg
        x = quantize(x_dev, cfg.x_frac, cfg.x_bits, "input")
        before = self.device.counters()
        self._loaded_for = None  # the evaluation batches take the sample memory
        out = []
        for start in range(0, len(x), cfg.max_batch):  # the device holds one batch at a time
            xb = x[start:start + cfg.max_batch]
            self.device.load_batch(xb, np.zeros((len(xb), cfg.layers[-1]), np.int64))
            self.device.infer()
            out.append(self.device.read_outputs(len(xb)))
        after = self.device.counters()
        self._evaluation["spikes"] += [after[f"spikes{h}"] - before[f"spikes{h}"] for h in range(len(cfg.layers) - 2)]
        self._evaluation["spike_fanout"] += after["spike_fanout"] - before["spike_fanout"]
        return dequantize(np.concatenate(out), cfg.w_frac)

    def float_params(self):
        f = 1.0 / (1 << self.cfg.w_frac)
        return [(W * f, b * f) for W, b in split_params(self.params)]

    def weights_npz(self):
        out = super().weights_npz()
        for l, p in enumerate(self.params, start=1):
            out[f"W{l}_int"], out[f"b{l}_int"] = p[:, :-1], p[:, -1]
        return out

    def load_weights(self, npz):
        self._write([np.concatenate([npz[f"W{l}_int"], npz[f"b{l}_int"][:, None]], axis=1).astype(np.int64)
                     for l in range(1, self.cfg.n_layers + 1)])

    def counters(self):
        """Training work only (the device's counters less what evaluations spent), as the golden Counters."""
        cfg = self.cfg
        dev = self.device.counters()
        spikes = [int(dev[f"spikes{h}"] - self._evaluation["spikes"][h]) for h in range(len(cfg.layers) - 2)]
        return Counters(forward_passes=self.passes, samples=self.samples, spikes=spikes,
                        spike_fanout=int(dev["spike_fanout"] - self._evaluation["spike_fanout"]),
                        input_macs=self.samples * cfg.layers[0] * cfg.layers[1], update_passes=self.steps_done,
                        weight_updates=self.steps_done * cfg.n_params).to_dict()

    def state(self):
        c = self.counters()
        return {"data_state": self.data_state, "passes": self.passes, "samples": self.samples,
                "steps_done": self.steps_done, "spikes": c["spikes"], "spike_fanout": c["spike_fanout"]}, {}

    def load_state(self, state, arrays):
        self.data_state = int(state["data_state"])
        self.passes, self.samples, self.steps_done = state["passes"], state["samples"], state["steps_done"]
        # The device counts from where it stands now; the earlier processes' training work is added back.
        self._evaluation["spikes"] -= np.asarray(state["spikes"], np.int64)
        self._evaluation["spike_fanout"] -= state["spike_fanout"]

    def close(self):
        if self._on_close:
            self._on_close()
            self._on_close = None


class GoldenBackend(DeviceBackend):
    """The device in software (sim.golden_device behind sim.endpoint.DeviceEndpoint), in process."""

    def __init__(self, cfg: DeviceConfig, init, settings, seed: int):
        self.golden_device = GoldenDevice(cfg)
        self.model = self.golden_device.model  # the device's golden model
        transport = LoopbackTransport(DeviceEndpoint(self.golden_device.execute, cfg, bulk=self.golden_device))
        super().__init__("golden", cfg, init, settings, seed, transport)


def open_device_backend(name: str, cfg: DeviceConfig, init, settings, seed: int, link: LinkOptions) -> DeviceBackend:
    """The rtl backend (a virtual board started for this run, stopped at its end) or the serial one."""
    if name == "serial":
        if not link.port:
            raise ValueError("--backend serial needs --port (the board's serial port, e.g. /dev/ttyUSB1)")
        transport = SerialTransport(link.port, link.baud)
        try:
            return DeviceBackend(name, cfg, init, settings, seed, transport,
                                 timeout=link.timeout or 2.0, retries=link.retries, on_close=transport.close)
        except BaseException:
            transport.close()
            raise
    from rfsnn.sim.virtual_board import BoardSpec, VirtualBoard

    board = BoardSpec(cfg, link.neuron_lanes, link.sample_lanes, link.clock_mhz * 1e6, link.baud, link.simulator)
    vb = VirtualBoard.launch(board, link.build_dir, on_status=lambda text: print(text, flush=True))
    try:
        transport = SerialTransport(vb.port, link.baud)
        return DeviceBackend(name, cfg, init, settings, seed, transport, timeout=link.timeout or 120.0,
                             retries=link.retries, on_close=lambda: (transport.close(), vb.stop()))
    except BaseException:
        vb.stop()
        raise


class FloatBackend(Backend):
    """Float references. Weight perturbation uses the device's update rule (SGD on the same schedule);
    BPTT and RFG use Adam, as in the paper."""

    def __init__(self, name: str, spec: "floatnet.FloatNetSpec", init, settings, seed: int):
        self.name, self.spec, self.s, self.seed = name, spec, settings, seed
        self.params = [(W.copy(), b.copy()) for W, b in init]
        self.rng = np.random.default_rng([seed, 0xF10A7])
        self.opt = optim.SGD() if name == "float-wp" else optim.Adam()
        self.forward_passes = 0

    def attach(self, x_dev, y_dev):
        self.sampler = BatchSampler(x_dev, y_dev, self.s.batch, np.random.default_rng([self.seed, 2]))

    def train(self, first, count, lr_of):
        out = []
        for i in range(first, first + count):
            x, y = self.sampler.next()
            out.append((i, self._step(x, y, lr_of(i))))
        return out

    def _step(self, x_dev, y_dev, lr):
        s = self.s
        target = y_dev.reshape(len(y_dev), -1)
        if self.name == "float-bp":
            loss, grads, n = estimators.bptt(self.spec, self.params, x_dev, target)
        elif self.name == "float-rfg":
            loss, grads, n = estimators.rfg(self.spec, self.params, x_dev, target, self.rng, directions=s.directions,
                                            mode=s.scope)
        else:
            V, w = estimators.sample_directions(self.spec, self.rng, s.directions,
                                                "gaussian" if s.noise == "gauss4" else "rademacher",
                                                s.scope, "rank1")
            loss, _, n, slopes = estimators.wp_with_directions(self.spec, self.params, x_dev, target, V, w, s.sigma,
                                                               s.difference)
            # The device's per-direction clip: |lr * slope_k * w_k| <= clip (weight units).
            bound = s.clip / (lr * np.where(w > 0, w, 1.0))
            grads = estimators.combine(self.spec, V, w, np.clip(slopes, -bound, bound))
        self.forward_passes += n
        self.params = self.opt.step(self.params, grads, lr)
        return float(loss)

    def predict_dev(self, x_dev):
        return floatnet.forward(self.spec, self.params, x_dev)

    def float_params(self):
        return self.params

    def load_weights(self, npz):
        self.params = [(np.array(npz[f"W{l}"], np.float64), np.array(npz[f"b{l}"], np.float64))
                       for l in range(1, len(self.spec.layers))]

    def state(self):
        opt, arrays = self.opt.state()
        return ({"rng": self.rng.bit_generator.state, "forward_passes": self.forward_passes, "optimiser": opt,
                 "sampler": self.sampler.state()},
                {f"opt_{k}": v for k, v in arrays.items()})

    def load_state(self, state, arrays):
        self.rng.bit_generator.state = state["rng"]
        self.forward_passes = state["forward_passes"]
        self.sampler.restore(state["sampler"])
        self.opt.load_state(state["optimiser"], {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")})


def device_weights(init, cfg: DeviceConfig) -> list[np.ndarray]:
    """(W, b) pairs in real units -> the device's [W | b] words, clipped into the weight range."""
    lo, hi = (v / (1 << cfg.w_frac) for v in cfg.w_range)
    return [quantize(np.clip(p, lo, hi), cfg.w_frac, cfg.w_bits, "initial weight") for p in join_params(init)]


def random_problem(cfg: DeviceConfig, batch: int, seed: int, spread: float = 0.9):
    """A network and a batch in the device's integer formats, for checking gateware and links: weights as
    a training run starts them, inputs uniform on [-1, 1]^n0, targets uniform on [-0.8, 0.8].
    Returns (params, x, t) as int64 arrays."""
    rng = np.random.default_rng(seed)
    spec = floatnet.FloatNetSpec(layers=cfg.layers, T=cfg.t_steps, leak_shift=cfg.leak_shift, theta=cfg.threshold)
    params = device_weights(floatnet.init_params(spec, rng, spread=spread), cfg)
    x = quantize(rng.uniform(-1, 1, size=(batch, cfg.layers[0])), cfg.x_frac, cfg.x_bits, "input")
    t = quantize(rng.uniform(-0.8, 0.8, size=(batch, cfg.layers[-1])), cfg.w_frac, cfg.y_bits, "target")
    return [np.asarray(p, np.int64) for p in params], np.asarray(x, np.int64), np.asarray(t, np.int64)


def make_backend(name: str, cfg: DeviceConfig, settings, seed: int, link: LinkOptions | None = None) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    spec = floatnet.FloatNetSpec(layers=cfg.layers, T=cfg.t_steps, leak_shift=cfg.leak_shift, theta=cfg.threshold)
    init = floatnet.init_params(spec, np.random.default_rng([seed, 1]), spread=settings.init_spread,
                                readout_gain=settings.init_readout_gain)
    if name == "golden":
        return GoldenBackend(cfg, init, settings, seed)
    if name in DEVICE_BACKENDS:
        return open_device_backend(name, cfg, init, settings, seed, link or LinkOptions())
    return FloatBackend(name, spec, init, settings, seed)
