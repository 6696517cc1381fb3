# Every target bootstraps .venv from the machine's python3 on first use and reuses it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest workers (make test) and notebooks executed at once (make run: one per core)
JOBS     ?= 4
RUN_JOBS ?= 2

.PHONY: run test lab bench clean lint down

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# ipykernel's installer leaves its empty *_kernels temp dir behind: give it one we remove.
	@tmp=$$(mktemp -d); TMPDIR=$$tmp $(BIN)/python -m ipykernel install --sys-prefix --name python3 \
		--display-name "Python 3 (workbook)" >/dev/null; status=$$?; rm -rf $$tmp; exit $$status
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/workbook run --mode both --profile ci --jobs $(RUN_JOBS)

# Each session gets its own temp root (concurrent sessions on one machine never share pytest's basetemp),
# removed afterwards whatever the outcome.
test: $(STAMP)
	@tmp=$$(mktemp -d -t workbook-pytest.XXXXXX); \
	trap 'rm -rf $$tmp' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	PYTEST_DEBUG_TEMPROOT=$$tmp $(BIN)/python -m pytest -n $(JOBS) -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lib services tests bench

# JupyterLab refuses to run as root unless told; containers and CI machines often are root.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: $(STAMP)
	$(BIN)/python -m bench

down: $(STAMP)
	$(BIN)/workbook down

clean:
	-@test -x $(BIN)/workbook && $(BIN)/workbook down
	rm -rf $(VENV) outputs/*/ .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
