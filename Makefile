# The two commands of the README. Both install what they need first (tools/bootstrap.sh, idempotent).
.PHONY: demo test setup
PYTEST_MARKERS ?= not vivado and not board

setup:
	@./tools/bootstrap.sh

demo: setup
	@.venv/bin/qpolicy demo

test: setup
	@ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST .venv/bin/python -m pytest -q -m "$(PYTEST_MARKERS)" tests
