# The course's commands. The first use creates .venv and installs van_edu with its dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WHEELS := .cache/colab-wheels

.PHONY: demo test test-fast lint lab notebooks exercises book install colab-wheels bench-peers clean

demo: $(STAMP)  ## the main job: VAN vs ViT vs ResNet on the bundled Fashion-MNIST (report in runs/compare)
	$(BIN)/van-edu compare

test: lint $(WHEELS)/.done  ## all tests: lint, unit tests, grader tests, the notebooks (nbval, test mode), the slow ones
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the edit loop: unit tests without the slow ones (no notebooks), under a minute
	$(BIN)/python -m pytest tests -m "not slow"

lint: $(STAMP)  ## ruff: pyflakes, import order, bugbear (rules in pyproject.toml)
	$(BIN)/ruff check .

# The environment's own python3 kernel (JUPYTER_PREFER_ENV_PATH: before any user-wide kernel of that
# name) and its widget extension, so the notebooks' explorers have their sliders.
lab: $(STAMP)  ## JupyterLab on the notebooks, with this environment's python3 kernel
	JUPYTER_PREFER_ENV_PATH=1 $(BIN)/python -m jupyterlab --ServerApp.root_dir=notebooks \
	  $$(test "$$(id -u)" = 0 && echo --allow-root)

notebooks: $(STAMP)  ## re-execute the course notebooks in full from fresh kernels (the committed outputs)
	$(BIN)/python tools/notebooks.py stamp
	$(BIN)/python tools/notebooks.py execute

book: $(STAMP)  ## the course as a static website in build/book/, from the committed notebooks (nothing re-executed)
	$(BIN)/python tools/book.py

# transformers' VAN port needs transformers<5, hence huggingface-hub<1, which the course's datasets
# (>=1.31) cannot share an environment with: the peers get their own, with this environment's torch.
PEERS := .venv-peers
bench-peers: $(STAMP)  ## the course's VAN against transformers' port and the authors' layout (own env, transformers<5)
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])')" \
	  "transformers<5" "einops>=0.7" numpy
	$(PEERS)/bin/pip install -q --no-deps -e .
	$(PEERS)/bin/python benchmarks/van_peers.py --out benchmarks/results/van_peers.json

exercises: $(STAMP)  ## regenerate exercises/student and exercises/solutions from exercises/source
	$(BIN)/python -m van_edu.grading generate

install: $(STAMP)

colab-wheels: $(WHEELS)/.done  ## the wheels the Colab play-through installs offline (tests/test_colab.py)

# What a fresh Colab-like environment installs in tests/test_colab.py, fetched once here (set-up
# time) so that the test itself never downloads: this torch, what Colab has, van_edu's own deps.
$(WHEELS)/.done: $(STAMP)
	$(BIN)/pip download -q -d $(WHEELS) setuptools wheel numpy matplotlib ipykernel \
	  "torch==$$($(BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])')" \
	  $$($(BIN)/python -c 'from van_edu.notebook import COLAB_DEPS; print(" ".join(COLAB_DEPS))')
	touch $@

# torch is installed only when the environment has none, so a CPU (or Colab/conda) build is kept.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch
	$(BIN)/pip install -e ".[dev,docs]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs build .pytest_cache .cache
