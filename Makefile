# The two commands of a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= ./data
IN_CI := $(filter 1 true yes True Yes TRUE YES,$(CI))
# The suite on every core: a test module (one per backend) is one unit of a worker, heaviest units first
# (tests/support/parallel.py). PARALLEL= runs it in one process.
PARALLEL ?= -n auto --dist loadscope --no-loadscope-reorder

.PHONY: run test test-arm64 lint chromium postgresql golang container-tools arm64-tools bench soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

run: $(BIN)/python
	$(BIN)/python -m pip install --quiet .
	$(BIN)/smarty-emulator serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# In CI (CI=true, or 1 or yes, as tests/support/ci.py reads it) the arm64 image test runs too, so its emulation is
# set up there.
test: $(BIN)/python chromium postgresql golang container-tools $(if $(IN_CI),arm64-tools)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PARALLEL)

# The linux/arm64 image under QEMU (tests marked arm64): about 8 min the first time on a machine, 2-3 after.
test-arm64: $(BIN)/python container-tools arm64-tools
	$(BIN)/python -m pip install --quiet -e '.[test]'
	SMARTY_TEST_ARM64=1 $(BIN)/python -m pytest -m arm64

# Benchmarks (about 5 minutes): writes bench/RESULTS.md.
bench: $(BIN)/python postgresql
	$(BIN)/python -m pip install --quiet -e '.[test]'
	BENCH_VIA_MAKE=1 $(BIN)/python bench/run.py

# The soak (10 minutes, 8 clients, two workers): writes its figures into bench/RESULTS.md (its own section).
soak: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	SMARTY_SOAK_RESULTS=bench/RESULTS.md $(BIN)/python -m pytest -m soak tests/ops/test_soak.py -s -q

lint: $(BIN)/python
	$(BIN)/ruff check .
	$(BIN)/mypy

# $(call apt-install,PACKAGES,WHO): Debian's PACKAGES, if this is root with apt-get; otherwise WHO skip (fail in CI).
define apt-install
if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	echo "installing Debian's $(1) for $(2)"; \
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null) \
		|| echo "$(1) could not be installed: $(2) will skip (and fail in CI)"; \
else \
	echo "skipping the install of $(1) (needs root and apt-get): $(2) will skip (and fail in CI)"; \
fi
endef

# Debian's chromium for the demo page's browser tests, installed where missing. Playwright never downloads a browser
# of its own.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then $(call apt-install,chromium,the browser tests); fi

# Debian's PostgreSQL server for the PostgreSQL tests and the benchmark's SQLite-vs-PostgreSQL figures (the tests
# start their own throw-away server), installed where missing.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then $(call apt-install,postgresql,the PostgreSQL tests); fi

# Debian's Go for the test of a Go client that reaches the emulator through its HTTPS proxy (it builds from the
# standard library alone, offline), installed where missing.
golang:
	@if ! command -v go >/dev/null 2>&1; then $(call apt-install,golang-go,the Go client test); fi

# Podman (with runc: crun fails on hosts whose cgroups are in hybrid mode) and debootstrap, which makes the base
# image the container tests build on (no container registry is needed), installed where missing.
container-tools:
	@missing=""; for tool in podman runc debootstrap; do \
		command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$${missing:+$$missing }$$tool"; done; \
	if [ -n "$$missing" ]; then $(call apt-install,$$missing,the container tests); fi

# QEMU user emulation for the linux/arm64 image: Debian's qemu-user-static and binfmt-support, the binfmt_misc
# file system mounted where it is not, and the aarch64 handler registered.
arm64-tools:
	@if [ ! -x /usr/bin/qemu-aarch64-static ] || [ ! -x /usr/sbin/update-binfmts ]; then \
		$(call apt-install,qemu-user-static binfmt-support,the arm64 tests); fi
	@if [ "$$(id -u)" = 0 ] && [ -x /usr/sbin/update-binfmts ]; then \
		[ -e /proc/sys/fs/binfmt_misc/register ] \
			|| mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
			|| echo "binfmt_misc could not be mounted: the arm64 tests will skip (and fail in CI)"; \
		[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || /usr/sbin/update-binfmts --enable qemu-aarch64 || true; \
	fi
