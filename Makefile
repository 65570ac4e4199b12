# The two commands of the README: `make demo` and `make test`. Each sets up the virtualenv first.
SHELL := /bin/bash
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/mmdist/torch_extensions
export RAY_DEDUP_LOGS ?= 1
export PYTHONPATH := $(CURDIR):$(PYTHONPATH)

.PHONY: setup demo test
setup:
	@bash .ci/setup.sh >/dev/null

demo:
	@venv=$$(bash .ci/setup.sh) && "$$venv/bin/python" jobs/demo.py $(ARGS)

test:
	@venv=$$(bash .ci/setup.sh) && "$$venv/bin/python" -m pytest $(ARGS)
