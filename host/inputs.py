"""Files a user hands to the command line, checked in one place: JSON objects (device configurations,
build reports, run configurations) and point arrays for `rfsnn predict`.

Every refusal is an InputError (a ValueError: the CLI prints it in one line and exits with 2) that
names the file, what was wrong and what would be accepted.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from rfsnn.sim.contract.config import ConfigError, DeviceConfig


class InputError(ValueError):
    """A file or value given to rfsnn that it cannot use."""


def _existing_file(path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p}: no such file")
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder; expected a file")
    return p


def read_json_object(path, what: str = "file") -> dict:
    """The JSON object in `path`; anything else (no file, a folder, not JSON, a list, null) is refused."""
    p = _existing_file(path, what)
    try:
        data = json.loads(p.read_text())
    except UnicodeDecodeError:
        raise InputError(f"{what} {p} is not a text file (expected JSON)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {p} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except OSError as e:
        raise InputError(f"{what} {p} cannot be read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {p} holds a JSON {_json_kind(data)}; expected an object")
    return data


def _json_kind(v) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(v), "number")


def device_config_from(data: dict, where: str) -> DeviceConfig:
    """The DeviceConfig in a JSON object of one of the kinds rfsnn writes: a run's config.json or what
    `rfsnn config` prints (a "device" object in both), a board build's report.json (its "config"
    object; its "device" is the FPGA's name), or a DeviceConfig's own fields (DeviceConfig.to_json)."""
    if isinstance(data.get("device"), dict):
        entry, kind = data["device"], "its \"device\" object is "
    elif "board" in data and "config" in data:
        entry, kind = data["config"], "its \"config\" object (a build report's) is "
    else:
        entry, kind = data, ""
    try:
        return DeviceConfig.from_dict(entry)
    except (ConfigError, TypeError) as e:
        raise InputError(f"{where}: {kind}not a valid device configuration: {e} (accepted: a build's report.json, "
                         "a run's config.json, what `rfsnn config` prints, or a DeviceConfig's JSON)") from None


def load_device_config(path) -> DeviceConfig:
    """--device-config / --config: a DeviceConfig JSON, a run's config.json or a build's report.json."""
    return device_config_from(read_json_object(path, "device configuration"), str(path))


def load_points(path, dim: int, coord_names: tuple[str, ...]) -> np.ndarray:
    """`rfsnn predict --input`: a .npy array of N points of `dim` coordinates, (N, dim) (or (N,) when
    dim is 1), as float64. Values outside the task's box are checked by the caller (validate_points)."""
    p = _existing_file(path, "input")
    try:
        x = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e) or "allow_pickle" in str(e):
            raise InputError(f"input {p} is not a NumPy .npy array file (save the points with numpy.save)") from None
        raise InputError(f"input {p} is not a readable .npy array: {e}") from None
    except (OSError, EOFError) as e:
        raise InputError(f"input {p} cannot be read as a .npy array: {e}") from None
    if isinstance(x, np.lib.npyio.NpzFile):
        x.close()
        raise InputError(f"input {p} is an .npz archive; expected one .npy array of shape (N, {dim})")
    expected = f"(N, {dim}) points ({', '.join(coord_names)})"
    if x.dtype.kind not in "iuf":
        raise InputError(f"input {p} holds {x.dtype} values; expected {expected} as numbers")
    if x.ndim == 1 and dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise InputError(f"input {p} holds an array of shape {x.shape}; expected {expected}")
    if len(x) == 0:
        raise InputError(f"input {p} holds no points; expected {expected} with N >= 1")
    return x.astype(np.float64)


def load_npz(path, what: str, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz file, all read into memory; a damaged or incomplete file is refused."""
    p = _existing_file(path, what)
    try:
        with np.load(p, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise InputError(f"{what} {p} lacks {', '.join(missing)}")
            return {k: npz[k] for k in npz.files}
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise InputError(f"{what} {p} is damaged or not an .npz archive ({type(e).__name__}: {e})") from None
