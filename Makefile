# velodash: `make run` launches the dashboard on the bundled sample data; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch 2.13.0 first: a plain `torch` requirement may pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet "torch>=2.2,<3"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/velodash run

# Debian chromium + chromedriver for the browser tests (installed when missing and apt is usable).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium/chromedriver missing: browser tests will be skipped"; fi; \
	fi

test: $(STAMP) browser
	DASH_TEST_CHROMEPATH=/usr/bin/chromium $(BIN)/python -m pytest --headless

lint: $(STAMP)
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python bench/bench_fit.py

clean:
	rm -rf $(VENV) .pytest_cache
