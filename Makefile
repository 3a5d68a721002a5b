# The two commands of the README: `make demo` (the main job) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= models/demo

.PHONY: setup demo test lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh $(DEMO_DIR)

test: setup
	@bash scripts/clients_env.sh
	@bash scripts/imx500_env.sh || echo "make test: no IMX500 toolchain venv (see above): tests/test_imx500.py conversion test will skip" >&2
	@$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: setup
	@$(BIN)/ruff check . && $(BIN)/mypy

clean:
	rm -rf $(DEMO_DIR) data/fashion-mnist-demo .pytest_cache
