# Everything a person does with this repository. `make run` and `make test` set up all they
# need on a fresh Debian machine (root, or sudo-less apt as root).

PYTHON        ?= python3
KERNEL_PYTHON ?= /usr/bin/python3
VENV          := .venv
KVENV         := .kernel-venv
PY            := $(VENV)/bin/python
ARGS          ?=

.PHONY: run test lint format bench notebooks clean deps system-deps browser-deps

run: deps
	$(PY) -m server $(ARGS)

test: deps browser-deps lint
	$(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check server kernels files transcript packages tests bench notebooks client examples
	$(VENV)/bin/ruff format --check server kernels files transcript packages tests bench notebooks client examples

format: $(VENV)/.installed
	$(VENV)/bin/ruff format server kernels files transcript packages tests bench notebooks client examples
	$(VENV)/bin/ruff check --fix server kernels files transcript packages tests bench notebooks client examples

# Ours vs Jupyter Kernel Gateway vs a bare ZMQ kernel (bench/README.md). The driver and
# Kernel Gateway live in their own .bench-venv; BENCH_QUICK=1 for a short smoke run.
bench: deps
	@if [ ! -f .bench-venv/.installed ] || [ bench/requirements.txt -nt .bench-venv/.installed ]; then \
	  $(PYTHON) -m venv .bench-venv && \
	  .bench-venv/bin/pip install -q --upgrade pip && \
	  .bench-venv/bin/pip install -q -r bench/requirements.txt && \
	  touch .bench-venv/.installed; \
	fi
	.bench-venv/bin/python -m bench $(ARGS)

# Example notebooks exported by the server from a scripted analysis session.
notebooks: deps
	$(PY) notebooks/generate.py

clean:
	rm -rf $(VENV) $(KVENV) .data .pytest_cache .ruff_cache *.egg-info client/*.egg-info

deps: system-deps $(VENV)/.installed $(KVENV)/.installed

# Debian packages the server needs: venv support for both interpreters, bubblewrap.
system-deps:
	@missing=""; \
	$(KERNEL_PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v prlimit >/dev/null || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

# For the console's browser test only (not `make run`): Debian's Chromium with a font
# (Playwright drives it; its own browser download is not used). About 100 MB: apt shows its
# progress.
browser-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -d /usr/share/fonts/truetype/dejavu ] || missing="$$missing fonts-dejavu-core"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the browser test:$$missing"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

# The server, its test tools, and the client package (client/, with its MCP extra) that the
# tests and the benchmark import.
$(VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]' -e './client[mcp]'
	touch $@

# The kernels' environment: from a world-readable Python so sandbox uids can run it. As root
# it is built at a neutral path named by the requirements' hash, and .kernel-venv links to
# it: the venv's own files and a sandbox's mount table then never name this checkout.
$(KVENV)/.installed: kernel-requirements.txt
	@if [ "$$(id -u)" = 0 ]; then \
	  home=/opt/kss/kernel-env-$$(sha256sum kernel-requirements.txt | cut -c1-12); \
	else home=$(CURDIR)/$(KVENV); fi; \
	if [ ! -f "$$home/.installed" ]; then \
	  echo "building the kernel environment in $$home (a few minutes)"; \
	  rm -rf "$$home" && $(KERNEL_PYTHON) -m venv "$$home" && \
	  "$$home/bin/pip" install -q --upgrade pip && \
	  "$$home/bin/pip" install --progress-bar off -r kernel-requirements.txt && \
	  MPLCONFIGDIR="$$home/mplconfig" "$$home/bin/python" -c 'import matplotlib.pyplot' && \
	  chmod -R a+rX "$$home" && touch "$$home/.installed" || exit 1; \
	fi; \
	if [ "$$home" != "$(CURDIR)/$(KVENV)" ]; then rm -rf $(KVENV) && ln -s "$$home" $(KVENV); fi
