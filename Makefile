# Two commands for a fresh machine: `make demo` and `make test`. Each sets up what it needs.
#
# Their environment (.venv) installs the exact versions of constraints.txt, so someone else's release cannot
# turn the build red overnight. `make test-latest` runs the suite in .venv-latest against the newest releases
# (pyproject.toml's ranges) to see drift before it lands; `make lock` does that and, when the suite passes,
# writes those versions into constraints.txt (review the diff, commit it on purpose).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := constraints.txt
LATEST := .venv-latest
# Pinned everywhere: 2.13.0 is the CPU wheel here; an unpinned torch pulls the multi-GB CUDA build.
TORCH := torch==2.13.0
# Real UCR/UEA recordings for tests and benchmarks: only the data files of aeon's wheel are read, so it is
# installed without its (large) dependency tree and never imported.
AEON := aeon==1.6.0

.PHONY: demo test test-latest lock bench firmware-tools clean

# $(1): the venv, $(2): pip options for grukit's dependencies (the lock, or --upgrade for the newest).
define make_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet $(2) $(TORCH)
	$(1)/bin/python -m pip install --quiet $(2) -e '.[test]'
	$(1)/bin/python -m pip install --quiet --no-deps $(AEON)
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call make_venv,$(VENV),-c $(LOCK))
	touch $(STAMP)

demo: $(STAMP) firmware-tools
	$(VENV)/bin/grukit demo

# The emulated Cortex-M and RISC-V tests need Debian's cross toolchains, C libraries and QEMU: installed
# when we are root, otherwise those tests skip and say what is missing.
FIRMWARE_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm \
	gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc
firmware-tools:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
		&& command -v riscv64-unknown-elf-gcc >/dev/null && command -v qemu-system-riscv32 >/dev/null \
		&& [ -f /usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(FIRMWARE_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(FIRMWARE_PACKAGES) >/dev/null; \
	else echo "not root: cannot install them; emulated Cortex-M / RISC-V tests will skip and latency / flash will be estimates"; fi

test: $(STAMP) firmware-tools
	$(PY) -m pytest -n 2 -q

test-latest: firmware-tools
	rm -rf $(LATEST)
	$(call make_venv,$(LATEST),--upgrade --upgrade-strategy eager)
	@$(LATEST)/bin/python -m pip freeze --exclude-editable | sed 's/^/  latest: /'
	$(LATEST)/bin/python -m pytest -n 2 -q -p no:cacheprovider

# The suite passed on the newest releases: they become the lock (torch's local +cpu label dropped, so the
# constraint also matches the wheel on other machines).
lock: test-latest
	{ echo "# grukit's test and demo environment, exact versions: written by 'make lock' (Python $$($(LATEST)/bin/python -c 'import platform; print(platform.python_version())'))."; \
	  echo "# make test, make demo and .ci/run install these; pyproject.toml keeps the ranges users get."; \
	  $(LATEST)/bin/python -m pip freeze --all --exclude-editable | grep -v "^pip==" | sed "s/+cpu$$//"; } > $(LOCK)

bench: $(STAMP) firmware-tools
	$(PY) benchmarks/accuracy.py
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/step_profile.py
	$(PY) benchmarks/bench_firmware_gru.py
	$(PY) benchmarks/sparse.py
	$(PY) benchmarks/prune.py

clean:
	rm -rf $(VENV) $(LATEST) build dist *.egg-info
