"""A run folder on disk: what `rfsnn train` writes, and what `rfsnn predict` and `rfsnn train --resume`
read back.

    config.json     written when the run starts: run id, settings, device configuration, scaler
    checkpoint.npz  at every checkpoint: the weights and all a run needs to continue (STATE_KEY)
    weights.npz     the final weights
    history.json, prediction.png, loss.png
    metrics.json    written last; its "status" is "complete" or "interrupted"

Every file is written under a temporary name in the folder, flushed to disk and renamed into place
(os.replace is atomic on POSIX), so a crash, a kill -9 or a power loss leaves either the previous file
or the new one under the real name, never half of one. Every file carries the run id of config.json,
and a file of another run is refused rather than served.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np

from .inputs import InputError, load_npz, read_json_object

CONFIG, CHECKPOINT, WEIGHTS, METRICS, HISTORY = "config.json", "checkpoint.npz", "weights.npz", "metrics.json", "history.json"
PLOTS = ("prediction.png", "loss.png")
RUN_FILES = (CONFIG, CHECKPOINT, WEIGHTS, METRICS, HISTORY, *PLOTS)
STATE_KEY = "state_json"  # in checkpoint.npz: the JSON of step, RNG states, history, counters
RUN_ID_KEY = "run_id"  # in both .npz files
TMP_PREFIX = ".tmp-"


class RunFolderError(InputError):
    """A run folder that cannot be used as asked (exists already, damaged, of another run)."""


# ---- atomic writes ----------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write) -> None:
    """Write `path` by calling write(binary file) on a temporary file beside it, then renaming it."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, obj) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def write_npz(path: Path, arrays: dict) -> None:
    write_atomic(path, lambda f: np.savez(f, **arrays))


def write_npy(path: Path, array: np.ndarray) -> None:
    """Exactly at `path` (np.save on a name would append .npy to it)."""
    write_atomic(path, lambda f: np.save(f, array))


# ---- the folder -------------------------------------------------------------------------------------
class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self._config: dict | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

    # -- starting a run --
    @classmethod
    def check_new(cls, path, force: bool = False) -> list[str]:
        """The run files that a new run in `path` replaces (only with force); refuses a folder that holds
        a run (without force) or files that are not a run's. Writes nothing."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"--out {p} is a file, not a folder")
        if not p.exists():
            return []
        present = sorted(x.name for x in p.iterdir() if not x.name.startswith(TMP_PREFIX))
        ours = [n for n in present if n in RUN_FILES]
        others = [n for n in present if n not in RUN_FILES]
        if others:
            raise RunFolderError(f"--out {p} holds files that are not a run's ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}); choose a new or empty folder")
        if ours and not force:
            raise RunFolderError(f"--out {p} holds a run already; continue it with `rfsnn train --resume {p}`, "
                                 "replace it with --force, or choose another --out")
        return ours

    @classmethod
    def create(cls, path, config: dict, force: bool = False) -> "RunFolder":
        """A new run: refuse a folder that holds a run (or anything else) unless force, which replaces
        an earlier run's files (and only those). Writes config.json with a new run id."""
        run = cls(path)
        for n in cls.check_new(path, force):
            run.file(n).unlink()
        run.path.mkdir(parents=True, exist_ok=True)
        run.clean_temporaries()
        write_json(run.file(CONFIG), {RUN_ID_KEY: uuid.uuid4().hex, **config})
        return run

    def clean_temporaries(self) -> None:
        """Temporary files of a writer that was killed before its rename."""
        for x in self.path.glob(f"{TMP_PREFIX}*"):
            x.unlink(missing_ok=True)

    # -- reading --
    def config(self) -> dict:
        if self._config is not None:
            return self._config
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path} is not a run folder (no such folder)")
        if not self.exists(CONFIG):
            raise RunFolderError(f"{self.path} is not a run folder (no {CONFIG})")
        c = read_json_object(self.file(CONFIG), "run configuration")
        missing = [k for k in (RUN_ID_KEY, "settings", "device", "scaler") if not isinstance(c.get(k), (dict, str))]
        if missing:
            raise RunFolderError(f"{self.file(CONFIG)} is damaged: it lacks {', '.join(missing)}")
        self._config = c
        return c

    def run_id(self) -> str:
        return self.config()[RUN_ID_KEY]

    def _check_same_run(self, name: str, found) -> None:
        found = str(found)
        if found != self.run_id():
            raise RunFolderError(f"{self.file(name)} belongs to another run (run id {found}, {CONFIG} says "
                                 f"{self.run_id()}); the folder mixes two runs' files")

    def metrics(self) -> dict | None:
        if not self.exists(METRICS):
            return None
        m = read_json_object(self.file(METRICS), "run metrics")
        self._check_same_run(METRICS, m.get(RUN_ID_KEY))
        return m

    def load_npz(self, name: str, keys: list[str]) -> dict[str, np.ndarray]:
        arrays = load_npz(self.file(name), "run file", [RUN_ID_KEY, *keys])
        self._check_same_run(name, arrays[RUN_ID_KEY])
        return arrays

    def checkpoint_state(self, arrays: dict) -> dict:
        if STATE_KEY not in arrays:
            raise RunFolderError(f"{self.file(CHECKPOINT)} lacks {STATE_KEY}")
        try:
            return json.loads(str(arrays[STATE_KEY]))
        except json.JSONDecodeError as e:
            raise RunFolderError(f"{self.file(CHECKPOINT)}: its {STATE_KEY} is damaged ({e.msg})") from None

    # -- writing during and after a run --
    def write_checkpoint(self, weights: dict, state: dict, arrays: dict | None = None) -> None:
        write_npz(self.file(CHECKPOINT), {RUN_ID_KEY: self.run_id(), STATE_KEY: json.dumps(state), **weights,
                                          **(arrays or {})})

    def write_weights(self, weights: dict) -> None:
        write_npz(self.file(WEIGHTS), {RUN_ID_KEY: self.run_id(), **weights})

    def write_history(self, history: dict) -> None:
        write_json(self.file(HISTORY), history)

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.file(METRICS), {RUN_ID_KEY: self.run_id(), **metrics})
