# Two entry points for a fresh machine; each sets itself up (venv + installs) first.
#   make demo   train the default task on the golden model (the chip in software) and print the error
#   make test   run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test setup clean bench-accuracy

$(BIN)/rfsnn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

setup: $(BIN)/rfsnn

demo: setup
	$(BIN)/rfsnn train --task mexican-hat --out runs/demo

test: setup
	$(BIN)/python -m pytest

bench-accuracy: setup
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) runs build *.egg-info
