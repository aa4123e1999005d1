# samoyeds-lab: `make lab` opens the labs in JupyterLab, `make test` runs every test (notebooks included).
# Both create the virtual environment .venv on first use (CPU torch wheel; no CUDA downloads).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
PORT   ?= 8888
ROOT_FLAG := $(shell [ "$$(id -u)" = "0" ] && echo --allow-root)

.PHONY: lab test test-gpu bench doctor sync-notebooks chromium clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[lab,test]"
	@touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=labs --ip=127.0.0.1 --port=$(PORT) $(ROOT_FLAG)

# every test, the browser test of the labs included (tests/browser: JupyterLab in Debian's chromium, a few
# minutes; screenshots in build/browser-artifacts/). Chromium is installed first where that is possible;
# elsewhere the browser test is skipped and pytest's summary says why.
test: $(STAMP) chromium
	$(PY) -m pytest -q

# Debian's chromium for the browser test (apt-get as root or with password-less sudo; never fails)
chromium:
	@bash scripts/install_chromium.sh

# on a machine with an SM80+ GPU and CuPy: the kernel-vs-reference tests
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

doctor: $(STAMP)
	$(VENV)/bin/samoyeds-lab doctor

bench: $(STAMP)
	$(VENV)/bin/samoyeds-lab bench formats

# regenerate the .ipynb files from their py:percent sources (outputs stay stripped)
sync-notebooks: $(STAMP)
	$(VENV)/bin/jupytext --to ipynb --update labs/[0-9]*.py

clean-venv:
	rm -rf $(VENV)
