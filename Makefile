# Set-up and run targets. Each target creates/refreshes the local virtual environment first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
PYTEST_ARGS ?= -n 2
# The serving environment (mtlora serve, tests/serve): nvidia-pytriton's tritonserver and the python3 its Python
# backend stub runs, which needs numpy < 2 (the toolkit's .venv keeps numpy 2). Pillow and ONNX Runtime are pinned to
# the toolkit's versions so served answers are bit-equal to local ones. Only PyTriton's bundled server, backends and
# stubs are used, not its Python API, so it goes in last without its API's dependencies.
TRITON_VENV ?= $(VENV)-triton

.PHONY: venv triton-venv demo test test-fast check lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,tensorrt-rtx,serve]'
	$(MAKE) --no-print-directory triton-venv
	touch $@

triton-venv:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q 'numpy<2' \
		$$($(PY) -c "from importlib.metadata import version as v; print(*(f'{p}=={v(p)}' for p in ('pillow', 'onnxruntime')))")
	$(TRITON_VENV)/bin/python -m pip install -q --no-deps nvidia-pytriton==0.7.0

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/mtlora demo --workdir $(WORKDIR)

# pytest's exit code 5 (no test collected) is a failure here, never a silent pass.
test: $(VENV)/.installed check
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAILED: pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: PYTEST_ARGS = -n 2 -m "not slow"
test-fast: test

# House rules, run before the tests: layered imports (pyproject's import-linter contracts), no import cycle between
# any two modules (lazy imports and the package root included), format, lint.
check: $(VENV)/.installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:xdist --noconftest tests/test_import_graph.py
	$(VENV)/bin/ruff format --check mtlora_deploy tests benchmarks
	$(VENV)/bin/ruff check mtlora_deploy tests benchmarks

lint: check

clean:
	rm -rf $(VENV) $(TRITON_VENV) runs .pytest_cache
