# Two commands for a fresh machine: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench firmware-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pinned: 2.13.0 is the CPU wheel here; an unpinned torch pulls the multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	# Real UCR/UEA recordings for tests and benchmarks: only the data files of aeon's wheel are read,
	# so it is installed without its (large) dependency tree and never imported.
	$(PY) -m pip install --quiet --no-deps aeon==1.6.0
	touch $(STAMP)

demo: $(STAMP) firmware-tools
	$(VENV)/bin/grukit demo

# The emulated Cortex-M tests need Debian's ARM toolchain and QEMU: installed when we are root,
# otherwise those tests skip and say what is missing.
firmware-tools:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm >/dev/null; \
	else echo "not root: cannot install them; emulated Cortex-M tests will skip and latency / flash will be estimates"; fi

test: $(STAMP) firmware-tools
	$(PY) -m pytest -n 2 -q

bench: $(STAMP) firmware-tools
	$(PY) benchmarks/accuracy.py
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/step_profile.py
	$(PY) benchmarks/bench_firmware_gru.py

clean:
	rm -rf $(VENV) build *.egg-info
