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

test: env
	$(PY) -m pytest -q tests
