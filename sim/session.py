"""The learner's commands as Python calls: one session, whatever carries the commands.

`LearnerSession(transact)` takes one coroutine, `transact(op, index, data) -> (status, data)`, that
delivers a command and returns its response; the Amaranth simulator, a cocotb testbench and (with the
host link) a serial port each supply their own. Everything above it (load weights, load a batch, run a
step, read losses and counters) is written once, here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contract.commands import INFO_FIELDS, Counter, Op, Reg, Status, counter_names, mode_bits, parse_info
from .contract.config import DeviceConfig, StepParams
from .contract.fixed import MASK64, signed64


class DeviceError(RuntimeError):
    """The device answered a command with an error status."""


@dataclass
class StepReport:
    losses: list[int]
    steps: list[int]
    cycles: int


class LearnerSession:
    def __init__(self, transact, cfg: DeviceConfig):
        self._transact = transact
        self.cfg = cfg

    async def call(self, op: Op, index: int = 0, value: int = 0) -> int:
        status, data = await self._transact(int(op), int(index), int(value) & MASK64)
        if status != Status.OK:
            name = Status(status).name if status in Status._value2member_map_ else status
            raise DeviceError(f"{op.name}(index={index}, value={value}) answered {name}")
        return data

    async def info(self) -> tuple[DeviceConfig, int, int]:
        words = [await self.call(Op.INFO, i) for i in range(len(INFO_FIELDS))]
        n_layers = words[INFO_FIELDS.index("n_layers")]
        words += [await self.call(Op.INFO, len(INFO_FIELDS) + i) for i in range(n_layers + 1)]
        return parse_info(words)

    async def write_params(self, params: list[np.ndarray]) -> None:
        await self.call(Op.PARAM_REWIND)
        for p in params:
            for v in np.asarray(p, np.int64).ravel():  # row-major [W | b]: the canonical order
                await self.call(Op.PARAM_WRITE, value=int(v))

    async def read_params(self) -> list[np.ndarray]:
        await self.call(Op.PARAM_REWIND)
        out = []
        for o, i in self.cfg.layer_shapes:
            vals = [signed64(await self.call(Op.PARAM_READ)) for _ in range(o * (i + 1))]
            out.append(np.array(vals, np.int64).reshape(o, i + 1))
        return out

    async def load_batch(self, x: np.ndarray, t: np.ndarray) -> None:
        x, t = np.asarray(x, np.int64), np.asarray(t, np.int64)
        await self.call(Op.SET, Reg.BATCH, len(x))
        await self.call(Op.SAMPLE_SEEK, value=0)
        for xs, ts in zip(x, t):
            for v in list(xs) + list(ts):
                await self.call(Op.SAMPLE_WRITE, value=int(v))

    async def read_outputs(self, batch: int) -> np.ndarray:
        await self.call(Op.SAMPLE_SEEK, value=0)
        vals = [signed64(await self.call(Op.OUTPUT_READ)) for _ in range(batch * self.cfg.layers[-1])]
        return np.array(vals, np.int64).reshape(batch, self.cfg.layers[-1])

    async def infer(self) -> int:
        return await self.call(Op.INFER)

    async def set_step_params(self, sp: StepParams) -> None:
        for reg, v in ((Reg.SEED, sp.seed), (Reg.DIRECTIONS, sp.directions), (Reg.SIGMA, sp.sigma),
                       (Reg.GAIN_MANT, sp.gain_mant), (Reg.GAIN_SHIFT, sp.gain_shift), (Reg.CLIP, sp.clip),
                       (Reg.MODE, mode_bits(sp.noise, sp.difference, sp.scope, sp.stochastic_rounding)),
                       (Reg.LAYER_START, sp.layer_start)):
            await self.call(Op.SET, reg, v)

    async def train_step(self, sp: StepParams) -> StepReport:
        await self.set_step_params(sp)
        n_losses = await self.call(Op.TRAIN_STEP)
        cycles = await self.call(Op.READ_COUNTER, Counter.CYCLES_LAST)
        losses = [await self.call(Op.READ_LOSS, i) for i in range(n_losses)]
        steps = [signed64(await self.call(Op.READ_STEP, k)) for k in range(sp.directions)]
        return StepReport(losses, steps, cycles)

    async def counters(self) -> dict[str, int]:
        names = counter_names(self.cfg)
        return {name: await self.call(Op.READ_COUNTER, i) for i, name in enumerate(names)}
