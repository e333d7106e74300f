# The course's commands. The first use creates .venv and installs van_edu with its dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint lab notebooks exercises install clean

demo: $(STAMP)  ## the main job: VAN vs ViT vs ResNet on the bundled Fashion-MNIST (report in runs/compare)
	$(BIN)/van-edu compare

test: lint  ## all tests: lint, unit tests, grader tests, the notebooks (nbval, test mode), the slow ones
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the edit loop: unit tests without the slow ones (no notebooks), under a minute
	$(BIN)/python -m pytest tests -m "not slow"

lint: $(STAMP)  ## ruff: pyflakes, import order, bugbear (rules in pyproject.toml)
	$(BIN)/ruff check .

lab: $(STAMP)  ## JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks

notebooks: $(STAMP)  ## re-execute the course notebooks in full from fresh kernels (the committed outputs)
	$(BIN)/python tools/notebooks.py stamp
	$(BIN)/python tools/notebooks.py execute

exercises: $(STAMP)  ## regenerate exercises/student and exercises/solutions from exercises/source
	$(BIN)/python -m van_edu.grading generate

install: $(STAMP)

# torch is installed only when the environment has none, so a CPU (or Colab/conda) build is kept.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
