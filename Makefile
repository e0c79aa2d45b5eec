# shimgen: set up a fresh Debian machine, build the samples, run the demo or the tests.
#   make demo   - install everything, then run the main job on a built-in sample
#   make test   - install everything, then run the whole test suite
# Everything = Debian packages (QEMU, gcc, binutils, libxen-dev), a Python venv with
# shimgen and its dependencies, and Debian's Xen 4.17 hypervisor, Xen's readnotes and
# GRUB's Xen images fetched with `apt-get download` into the shimgen cache, never into /.
# The cache is the CLI's own: $SHIMGEN_CACHE when set (for make and the CLI alike),
# else $XDG_CACHE_HOME/shimgen or ~/.cache/shimgen (shimgen/cachedir.py).

PYTHON ?= python3
VENV ?= .venv
APT_PACKAGES := qemu-system-x86 gcc binutils make libxen-dev gzip time python3-venv python3-pip
CACHE_PACKAGES := xen-hypervisor-4.17-amd64 xen-utils-4.17 grub-xen-host
# The xl rig's dom0 (boot --loader xl-*): `python -m shimgen.verify.xlrig` fetches its
# packages (Debian's linux-image-amd64 kernel, busybox-static, xenstore-utils and the
# libraries xl needs: the list is shimgen/verify/xlrig.py's) and builds the initramfs once.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := $(VENV)/bin
LINT_PATHS := $(wildcard shimgen structs asm_templates tests bench examples)

.PHONY: setup apt venv cache samples demo test lint bench clean

setup: apt venv cache samples

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/shimgen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/shimgen

# apt-get download needs package lists; fetch them once if the cache is cold.
cache: venv
	@{ $(BIN)/python -m shimgen.verify.debcache $(CACHE_PACKAGES) && \
	   $(BIN)/python -m shimgen.verify.xlrig; } || \
	  { $(SUDO) apt-get update -qq && $(BIN)/python -m shimgen.verify.debcache $(CACHE_PACKAGES) && \
	    $(BIN)/python -m shimgen.verify.xlrig; }

# The samples include a header shimgen writes (samples/build/shimgen.h): the venv first.
samples: venv
	$(MAKE) -s -C samples SHIMGEN=$(abspath $(BIN))/shimgen

# The main job: make the PV-only sample universal, check it as Xen would, boot it
# as Xen PV, as Xen PVH and under QEMU's PVH loader, then as a domU (xl create) both ways.
DEMO_IN := samples/build/pv-hello
DEMO_OUT := build/demo/pv-hello.universal
DEMO_CMDLINE := hello from shimgen

demo: setup
	@mkdir -p $(dir $(DEMO_OUT))
	$(BIN)/shimgen patch $(DEMO_IN) -o $(DEMO_OUT) --force
	$(BIN)/shimgen check $(DEMO_OUT) --mode both --xen-parser
	$(BIN)/shimgen boot $(DEMO_OUT) --loader xen-pv --cmdline "$(DEMO_CMDLINE)"
	$(BIN)/shimgen boot $(DEMO_OUT) --loader xen-pvh --cmdline "$(DEMO_CMDLINE)"
	$(BIN)/shimgen boot $(DEMO_OUT) --loader qemu-pvh --cmdline "$(DEMO_CMDLINE)"
	$(BIN)/shimgen boot $(DEMO_OUT) --loader xl-pv --cmdline "$(DEMO_CMDLINE)" --timeout 60
	$(BIN)/shimgen boot $(DEMO_OUT) --loader xl-pvh --cmdline "$(DEMO_CMDLINE)" --timeout 60

# --shimgen-require-boot: a boot test whose QEMU or Xen is missing fails, never skips.
test: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/python -m pytest -q --shimgen-require-boot

bench: setup
	$(BIN)/python bench/bench.py

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

clean:
	rm -rf $(VENV) samples/build build *.egg-info
