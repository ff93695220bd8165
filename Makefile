# `make demo` and `make test` each set up .venv on a fresh machine first.
# torch is installed with pip at the version pinned in pyproject.toml (the build on this machine's disk).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.magvit-installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
export HF_HUB_OFFLINE := 1

.PHONY: test demo bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/magvit demo --out outputs/demo

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) outputs
