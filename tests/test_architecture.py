"""The package layering of docs/architecture.md, checked on the source and in a real interpreter.

Imports flow one way: rtl -> contract, sim -> contract, host -> contract and sim, boards -> rtl and
contract; nothing outside host/ imports rfsnn.host, and within host/ only the CLI (the composition
root) reaches the gateware or the boards, lazily. The contract (sim/contract) imports only itself, so
the host driver and the golden model run on a machine without Amaranth.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rtl", "sim", "host", "boards")


def module_name(path: Path) -> str:
    """rfsnn.sim.golden for sim/golden.py; a package's own module keeps its __init__."""
    return ".".join(["rfsnn", *path.relative_to(ROOT).with_suffix("").parts])


def imports_of(module: str, text: str) -> list[tuple[str, bool]]:
    """(imported rfsnn or amaranth module, whether at module level) for every import in the source."""
    tree = ast.parse(text)
    package = module.rsplit(".", 1)[0]  # what a relative import starts from (for __init__: the package)
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import name` may name a module: count it as importing pkg.name
            names = [f"{prefix}.{alias.name}" if prefix.startswith("rfsnn") else prefix for alias in node.names]
        else:
            continue
        found += [(n, id(node) in top_level) for n in names]
    return [(n, top) for n, top in found if n.startswith(("rfsnn.", "amaranth"))]


def layer_of(module: str) -> str:
    if module.startswith("amaranth"):
        return "amaranth"
    parts = module.split(".")
    if parts[1] == "sim" and len(parts) > 2 and parts[2] in ("contract", "cocotb"):
        return f"sim.{parts[2]}"
    return parts[1]


# What each layer may import besides itself: at module level, and more inside functions (lazily).
ALLOWED = {
    "sim.contract": set(),
    "rtl": {"sim.contract", "amaranth"},
    "sim": {"sim.contract"},
    "sim.cocotb": {"sim.contract", "sim", "rtl", "amaranth"},  # testbenches, run inside the simulator
    "host": {"sim.contract", "sim"},
    "boards": {"sim.contract", "rtl", "amaranth"},
}
ALLOWED_LAZILY = {
    "rfsnn.sim.rtlsim": {"amaranth"},  # the simulation harnesses build the gateware they run
    "rfsnn.sim.learner_sim": {"rtl"},
    "rfsnn.sim.virtual_board": {"rtl"},
    "rfsnn.sim.core_transport": {"rtl", "amaranth"},
    "rfsnn.host.cli": {"rtl", "boards"},  # the composition root
}


def violations(files: dict[str, str]) -> list[str]:
    """files: module name -> source text."""
    out = []
    for module, text in files.items():
        here = layer_of(module)
        for name, top in imports_of(module, text):
            there = layer_of(name)
            if there == here or there in ALLOWED[here] or (not top and there in ALLOWED_LAZILY.get(module, ())):
                continue
            out.append(f"{module}: {here} imports {name}" + ("" if top else " (inside a function)"))
    return out


def project_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def test_imports_flow_one_way():
    found = violations(project_sources())
    assert not found, "\n".join(found)


def test_the_checker_sees_wrong_imports():
    files = project_sources()
    files["rfsnn.sim.contract.config"] += "\n\ndef _late():\n    from rfsnn.host import train\n"
    files["rfsnn.rtl.learner.lif"] += "\nfrom ...sim import golden\n"
    assert violations(files) == ["rfsnn.rtl.learner.lif: rtl imports rfsnn.sim.golden",
                                 "rfsnn.sim.contract.config: sim.contract imports rfsnn.host.train (inside a function)"]


BLOCK_AMARANTH = """
import importlib.abc, sys
class NoAmaranth(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "amaranth" or name.startswith("amaranth."):
            raise ImportError("amaranth is blocked for this test")
sys.meta_path.insert(0, NoAmaranth())
"""


def test_host_and_golden_training_run_without_amaranth(tmp_path):
    script = BLOCK_AMARANTH + f"""
import rfsnn.host.link, rfsnn.host.train
from rfsnn.host.train import settings_for, train
try:
    import amaranth
except ImportError:
    pass
else:
    raise SystemExit("the blocker let amaranth through")
metrics = train(settings_for("mexican-hat", steps=40, n_train=256), out={str(tmp_path / "run")!r}, progress=False)
assert metrics["steps"] == 40, metrics
assert not [m for m in sys.modules if m.startswith("amaranth")], "amaranth was imported"
print("trained", metrics["test_rel_l2"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("trained "), done.stdout


def test_the_blocker_blocks(tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCK_AMARANTH + "import rfsnn.rtl.learner"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0 and "amaranth is blocked" in done.stderr


@pytest.mark.parametrize("module", ["rfsnn.sim.golden", "rfsnn.sim.golden_device", "rfsnn.sim.endpoint",
                                    "rfsnn.sim.ptyserve", "rfsnn.sim.contract.protocol", "rfsnn.host.backends"])
def test_software_side_imports_without_amaranth(module, tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCK_AMARANTH + f"import {module}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
