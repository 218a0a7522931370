"""The command line's promises: bad input is refused before anything runs, in one line, with exit 2;
a missing device is exit 3; --help documents the exit codes and shows the defaults."""
import pytest

from rfsnn.host import cli


@pytest.mark.parametrize("argv, expected", [
    (["sim", "--neuron-lanes", "0"], "--neuron-lanes"), (["sim", "--sample-lanes", "3"], "sample_lanes a power of two"),
    (["sim", "--steps", "0"], "--steps"), (["sim", "--directions", "0"], "--directions"),
    (["sim", "--directions", "40"], "1..32"), (["sim", "--lr", "-1"], "--lr"), (["sim", "--lr", "nan"], "--lr"),
    (["sim", "--batch", "0"], "--batch"), (["sim", "--batch", "300"], "1..256"),
    (["sim", "--layers", "2,0,1"], "layers"), (["sim", "--t-steps", "3"], "power of two"),
    (["virtual-board", "--baud", "0"], "--baud"), (["virtual-board", "--clock-mhz", "-1"], "--clock-mhz"),
    (["virtual-board", "--baud", "100000000"], "3000000 baud is the most"),
    (["build", "--board", "icebreaker", "--freq", "0"], "--freq"),
    (["build", "--board", "icebreaker", "--neuron-lanes", "0"], "--neuron-lanes"),
    (["info", "--port", "/dev/null", "--timeout", "0"], "--timeout"),
    (["read-weights", "--port", "/dev/null", "--output", "w.npz", "--retries", "-1"], "--retries"),
    (["train", "--hidden", "0"], "layers"), (["train", "--hidden", "a"], "--hidden"),
    (["train", "--t-steps", "3"], "power of two"), (["train", "--backend", "serial"], "--port"),
    (["train", "--port", "/dev/ttyUSB0"], "--backend serial"), (["train", "--resume", "x", "--steps", "5"], "drop --steps"),
])
def test_bad_input_is_refused_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the checkout
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert expected in err.strip().splitlines()[-1]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [["info", "--port", "/dev/rfsnn-no-such-port"],
                                  ["train", "--backend", "serial", "--port", "/dev/rfsnn-no-such-port", "--steps", "5"]])
def test_a_missing_device_is_exit_3(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot open serial port /dev/rfsnn-no-such-port")


def test_help_documents_exit_codes_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for line in ("2    bad input", "3    a tool or device", "1    the job ran and failed", "130", "RFSNN_DEBUG=1"):
        assert line in out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("--baud BAUD the UART's baud rate (default: 3000000)", "(default: mexican-hat)", "--retries RETRIES resends of a frame "
                  "before the link is given up (default: 3)", "--resume RUN"):
        assert shown in out, shown
