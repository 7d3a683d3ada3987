# velodash: `make run` launches the dashboard on the bundled sample data; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser redis run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel of torch 2.13.0 first: a plain `torch` requirement may pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet "torch>=2.2,<3"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Extra options for `velodash run`, e.g. make run RUN_ARGS="--port 8060".
RUN_ARGS ?=

run: $(STAMP)
	$(BIN)/velodash run $(RUN_ARGS)

# Debian chromium + chromedriver for the browser tests (installed when missing and apt is usable).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium/chromedriver missing: browser tests will be skipped"; fi; \
	fi

# Debian redis-server for the hosted-mode tests (Celery broker and job store; installed when
# missing and apt is usable; the tests start their own server on a free loopback port).
redis:
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server missing: hosted-mode tests will be skipped"; fi; \
	fi

# Two pytest workers, one test file each at a time (module fixtures stay in one process): the
# long real-data fits overlap with the browser and hosted tests, which mostly wait.
TEST_WORKERS ?= 2

test: $(STAMP) browser redis
	DASH_TEST_CHROMEPATH=/usr/bin/chromium $(BIN)/python -m pytest --headless -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

# The reference veloVI (scvi-tools) lives in its own virtualenv next to velodash; see bench/README.md.
bench:
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet "torch==2.13.0"
	echo "torch==2.13.0" > .venv-bench/torch-pin.txt
	.venv-bench/bin/pip install --quiet -c .venv-bench/torch-pin.txt -e ".[bench]"
	.venv-bench/bin/pip install --quiet --no-deps "velovi==0.3.1"
	OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv-bench/bin/python bench/bench_fit.py --sizes 3000x500 --converge-sizes 3000x500
	OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv-bench/bin/python bench/bench_analyses.py --size 3000x500

clean:
	rm -rf $(VENV) .pytest_cache
