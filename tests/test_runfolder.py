"""Run folders under crashes and damage: real kills of real `rfsnn train` processes, resumed to the very
weights of an uninterrupted run; a real kill -9 in the middle of a write; damaged and mixed folders
refused by `rfsnn predict` in one line."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from rfsnn.host import cli
from rfsnn.host.runfolder import TMP_PREFIX, RunFolder, write_npz
from rfsnn.host.train import settings_for, train

SMALL = dict(hidden=(16,), t_steps=8, n_train=512)  # a few hundred steps per second on one core


def _weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "run_id"}


def _checkpoint_step(folder):
    try:
        with np.load(folder / "checkpoint.npz") as z:
            return json.loads(str(z["state_json"]))["step"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return -1


def _train_process(args, out):
    return subprocess.Popen([sys.executable, "-m", "rfsnn.host.cli", "train", *args, "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend, sig", [("golden", signal.SIGKILL), ("float-bp", signal.SIGKILL),
                                          ("golden", signal.SIGINT), ("float-wp", signal.SIGTERM)])
def test_a_stopped_run_resumes_to_the_weights_of_the_uninterrupted_run(tmp_path, backend, sig):
    steps = 1500
    args = ["--task", "poisson1d", "--backend", backend, "--steps", str(steps), "--hidden", "16", "--t-steps", "8"]
    s = settings_for("poisson1d", backend=backend, steps=steps, hidden=(16,), t_steps=8)
    whole = train(s, out=tmp_path / "whole", progress=False)
    stop_after = random.Random().randrange(100, steps - 300)  # the checkpoint after which the signal comes
    out = tmp_path / "stopped"
    proc = _train_process(args, out)
    deadline = time.monotonic() + 120
    while _checkpoint_step(out) < stop_after:
        assert proc.poll() is None and time.monotonic() < deadline, (proc.returncode, proc.stderr.read())
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()
    else:  # a clean stop at a step boundary: the folder is complete and says so
        assert proc.returncode == 128 + sig, err
        m = json.loads((out / "metrics.json").read_text())
        assert m["status"] == "interrupted" and stop_after <= m["steps"] < steps, (stop_after, m)
        assert "--resume" in err
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["status"] == "complete" and resumed["steps"] == steps and resumed["resumed_at"]
    a, b = _weights(out / "weights.npz"), _weights(tmp_path / "whole" / "weights.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), f"stopped after {stop_after}"
    assert resumed["forward_passes"] == whole["forward_passes"]
    assert json.loads((out / "history.json").read_text())["loss"] == \
        json.loads((tmp_path / "whole" / "history.json").read_text())["loss"]


def test_a_kill_during_a_write_leaves_the_previous_file(tmp_path):
    """kill -9 of a process in the middle of writing a large checkpoint: the file under the real name is
    still the previous, complete one; only a temporary file is left, which the next run removes."""
    target = tmp_path / "checkpoint.npz"
    write_npz(target, {"step": np.array(1), "w": np.arange(10)})
    code = ("import numpy as np, sys; from pathlib import Path; from rfsnn.host.runfolder import write_npz; "
            "write_npz(Path(sys.argv[1]), {'step': np.array(2), 'w': np.zeros(400_000_000 // 8)})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 10_000_000 for p in tmp_path.glob(f"{TMP_PREFIX}*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the writer ended before it could be killed"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    with np.load(target) as z:
        assert int(z["step"]) == 1 and np.array_equal(z["w"], np.arange(10))
    assert list(tmp_path.glob(f"{TMP_PREFIX}*"))
    RunFolder(tmp_path).clean_temporaries()
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train(settings_for("poisson1d", steps=40, **SMALL), out=out, progress=False)
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


@pytest.fixture
def points(tmp_path):
    p = tmp_path / "points.npy"
    np.save(p, np.linspace(0, 1, 11)[:, None])
    return p


def _one_line_error(capsys, code, argv, *expected):
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    for e in expected:
        assert e in err[-1], err[-1]
    return err[-1]


def test_out_onto_a_run_is_refused_unless_forced(trained, run_copy, capsys):
    before = (run_copy / "weights.npz").read_bytes()
    _one_line_error(capsys, 2, ["train", "--task", "poisson1d", "--steps", "5", "--quiet", "--out", str(run_copy)],
                    "--resume", "--force")
    assert (run_copy / "weights.npz").read_bytes() == before  # nothing was touched
    assert cli.main(["train", "--task", "poisson1d", "--steps", "5", "--hidden", "16", "--t-steps", "8", "--quiet",
                     "--out", str(run_copy), "--force"]) == 0
    assert json.loads((run_copy / "metrics.json").read_text())["steps"] == 5
    assert json.loads((run_copy / "config.json").read_text())["run_id"] != \
        json.loads((trained / "config.json").read_text())["run_id"]


def test_out_onto_other_files_is_refused_even_with_force(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    _one_line_error(capsys, 2, ["train", "--steps", "5", "--quiet", "--out", str(tmp_path), "--force"], "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_predict_on_a_killed_run_uses_its_checkpoint(run_copy, points, tmp_path, capsys):
    for name in ("weights.npz", "metrics.json", "history.json"):
        (run_copy / name).unlink()
    assert cli.main(["predict", "--run", str(run_copy), "--input", str(points), "--output", str(tmp_path / "y")]) == 0
    assert "last checkpoint" in capsys.readouterr().err
    assert np.load(tmp_path / "y").shape == (11,)  # written at exactly the path given
    (run_copy / "checkpoint.npz").unlink()
    _one_line_error(capsys, 2, ["predict", "--run", str(run_copy), "--input", str(points), "--output",
                                str(tmp_path / "y2.npy")], "no weights yet", "--resume")


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _nan_weights(p):
    w = dict(np.load(p))
    w["W1"] = w["W1"].astype(np.float64)
    w["W1"][0, 0] = np.nan
    np.savez(p, **w)


def _drop_key(p):
    w = dict(np.load(p))
    del w["b2_int"]
    np.savez(p, **w)


def _drop_scaler(p):
    c = json.loads(p.read_text())
    del c["scaler"]
    p.write_text(json.dumps(c))


@pytest.mark.parametrize("name, damage, expected", [
    ("weights.npz", _truncate, "damaged"),
    ("weights.npz", lambda p: p.write_bytes(b""), "damaged"),
    ("weights.npz", _drop_key, "lacks b2_int"),
    ("weights.npz", _nan_weights, "non-finite"),
    ("config.json", _drop_scaler, "lacks scaler"),
    ("config.json", lambda p: p.write_text("[1, 2]"), "holds a JSON list"),
    ("config.json", lambda p: p.write_text('{"run_id": "x", "settings": {"task": "poisson1d", "speed": 3},'
                                           ' "device": {}, "scaler": {}}'), "unknown settings speed"),
])
def test_predict_refuses_a_damaged_run_folder_in_one_line(run_copy, points, tmp_path, capsys, name, damage, expected):
    damage(run_copy / name)
    _one_line_error(capsys, 2, ["predict", "--run", str(run_copy), "--input", str(points), "--output",
                                str(tmp_path / "y.npy")], expected)
    assert not (tmp_path / "y.npy").exists()


def test_predict_refuses_weights_of_another_run(trained, run_copy, points, tmp_path, capsys):
    other = tmp_path / "other"
    train(settings_for("poisson1d", steps=5, seed=1, **SMALL), out=other, progress=False)
    shutil.copy(other / "weights.npz", run_copy / "weights.npz")  # a crash between two runs' final writes
    _one_line_error(capsys, 2, ["predict", "--run", str(run_copy), "--input", str(points), "--output",
                                str(tmp_path / "y.npy")], "belongs to another run")


@pytest.mark.parametrize("content, expected", [
    (lambda p: p.write_text("0.1 0.2\n"), "not a NumPy .npy array file"),
    (lambda p: np.save(p, np.zeros((0, 1))), "holds no points"),
    (lambda p: np.save(p, np.zeros((4, 3))), "shape (4, 3)"),
    (lambda p: np.save(p, np.array(["a", "b"])), "values"),
    (lambda p: np.save(p, np.array([0.5, np.nan])), "sample 1"),
    (lambda p: p.mkdir(), "is a folder"),
])
def test_predict_refuses_bad_points_in_one_line(trained, tmp_path, capsys, content, expected):
    p = tmp_path / "points.npy"
    content(p)
    _one_line_error(capsys, 2, ["predict", "--run", str(trained), "--input", str(p), "--output",
                                str(tmp_path / "y.npy")], expected)


@pytest.mark.parametrize("argv, expected", [
    (["--steps", "0"], "--steps 0"), (["--steps", "-5"], "--steps -5"), (["--lr", "0"], "--lr 0"),
    (["--lr", "-1"], "--lr -1"), (["--lr", "inf"], "--lr inf"), (["--lr", "nan"], "--lr nan"),
    (["--directions", "0"], "--directions 0"), (["--sigma", "0"], "--sigma 0"), (["--sigma", "-0.1"], "--sigma"),
    (["--sigma", "nan"], "--sigma nan"), (["--sigma", "0.0001"], "whole weight LSBs"),
    (["--batch", "0"], "--batch 0"), (["--batch", "100000"], "--batch"), (["--seed", "-1"], "--seed -1"),
    (["--eval-every", "-2"], "--eval-every"), (["--lr", "1e30"], "--lr"),
    (["--backend", "serial", "--timeout", "0"], "--timeout"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, capsys, argv, expected):
    out = tmp_path / "run"
    _one_line_error(capsys, 2, ["train", "--quiet", "--out", str(out), *argv], expected)
    assert not out.exists()


@pytest.mark.parametrize("content, expected", [
    ("[1, 2]", "holds a JSON list"), ("null", "holds a JSON null"), ("{", "not valid JSON"),
    ('{"layers": "2,64,1"}', "layers must be a list"), ('{"t_steps": 16.5}', "t_steps must be an integer"),
    ('{"t_steps": 12}', "power of two"), ('{"speed": 1}', "unknown DeviceConfig fields"),
])
def test_bad_device_configuration_files_are_refused(tmp_path, capsys, content, expected):
    f = tmp_path / "device.json"
    f.write_text(content)
    _one_line_error(capsys, 2, ["train", "--quiet", "--out", str(tmp_path / "run"), "--device-config", str(f)],
                    expected, str(f))
    _one_line_error(capsys, 2, ["train", "--quiet", "--out", str(tmp_path / "run"), "--device-config",
                                str(tmp_path)], "is a folder")


def test_sigma_recorded_is_the_sigma_that_ran(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--task", "poisson1d", "--steps", "3", "--sigma", "0.01", "--quiet", "--out",
                     str(out), "--hidden", "16", "--t-steps", "8"]) == 0
    assert "runs as 0.0100098" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["settings"]["sigma"] == 41 / 4096


def test_no_file_is_left_half_written_or_temporary(trained):
    assert not list(trained.glob(f"{TMP_PREFIX}*"))
    assert {p.name for p in trained.iterdir()} == {"config.json", "checkpoint.npz", "weights.npz", "metrics.json",
                                                   "history.json", "prediction.png", "loss.png"}
    assert json.loads((trained / "metrics.json").read_text())["status"] == "complete"
    assert os.path.getsize(trained / "prediction.png") > 1000


@pytest.mark.slow
def test_a_killed_run_on_a_board_resumes_on_it(tmp_path):
    """--backend serial against a device behind a real pseudo-terminal (the golden device, which computes
    what the gateware computes): kill -9 of the host mid-run, `--resume` with the same port, and the
    weights are those of the uninterrupted run (which on the golden backend are the same bits)."""
    from rfsnn.sim.endpoint import DeviceEndpoint
    from rfsnn.sim.ptyserve import PtyServer
    from rfsnn.sim.golden_device import GoldenDevice

    steps = 600
    s = settings_for("poisson1d", steps=steps, hidden=(16,), t_steps=8)
    whole = tmp_path / "whole"
    train(s, out=whole, progress=False)
    cfg = s.device_config(1)
    device = GoldenDevice(cfg)
    server = PtyServer(DeviceEndpoint(device.execute, cfg, bulk=device)).start()
    try:
        out = tmp_path / "board"
        link = ["--backend", "serial", "--port", server.path, "--timeout", "5"]
        proc = _train_process(["--task", "poisson1d", "--steps", str(steps), "--hidden", "16", "--t-steps", "8",
                               *link], out)
        stop_after = random.Random().randrange(60, steps - 150)
        deadline = time.monotonic() + 120
        while _checkpoint_step(out) < stop_after:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        assert cli.main(["train", "--resume", str(out), "--quiet", "--port", server.path, "--timeout", "5"]) == 0
    finally:
        server.close()
    a, b = _weights(out / "weights.npz"), _weights(whole / "weights.npz")
    assert all(np.array_equal(a[k], b[k]) for k in b), f"killed after step {stop_after}"
