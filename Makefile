# Two commands do everything on a fresh machine:
#   make demo   create .venv, pretrain CPC v2 on the shipped CIFAR-10 slice,
#               export the encoder, print where everything went
#   make test   create .venv if needed, run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: demo test env

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: env
	$(PY) -m cpc_tf.pretrain --flagfile=flags/demo_cpu.flags --model_dir=$(DEMO_DIR)

# One pytest process per test file: in one process the suite's models (every
# ResNet preset, the paper-geometry steps) add up to more than 20 GiB.
test: env
	@status=0; for f in tests/test_*.py; do \
	  $(PY) -m pytest -q $$f || status=1; done; exit $$status
