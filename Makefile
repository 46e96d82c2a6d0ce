# Every target sets up .venv (repo root) on first use; `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: setup lint format test demo bench bench-data bench-gpu bench-train-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m vmp_jax.compile.toolchain gpu tpu  # vmp compile's: CUDA (h100, a100), libtpu (v5e...)
	$(BIN)/python -m cpu_kernels.build || echo "warning: no CPU kernels: the scan falls back to sequential"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# --dist loadfile: a test file runs on one worker, so its module fixtures (a two-process
# training run, a trained checkpoint) are built once. (xdist's loadgroup does not group under
# pytest 9: every test of an xdist_group landed on either worker.) --no-loadscope-reorder: the
# files go out in collection order, the slowest first (tests/conftest.py SLOWEST_FIRST).
# PYTEST_ARGS adds flags, e.g. make test PYTEST_ARGS="--durations=0 --compile-times".
test: lint
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The main job on CPU: generate the motion dataset, train the demo VMP on it, evaluate it,
# and classify a few videos with it.
demo: setup
	test -f data/demo/train.txt || $(BIN)/vmp make-synthetic --out data/demo --videos-per-class 600
	$(BIN)/vmp train --config configs/demo.py --workdir runs/demo
	$(BIN)/vmp eval --config configs/demo.py --checkpoint runs/demo
	$(BIN)/vmp predict --checkpoint runs/demo --top-k 2 \
	    $$(head -n 4 data/demo/val.txt | sed 's|^|data/demo/|; s| .*||')

bench: setup
	$(BIN)/vmp bench-scan

# Training-pipeline clips/s on 320p H.264 (videos generated into data/bench-320p once).
bench-data: setup
	$(BIN)/vmp bench-data

# The Pallas issue's figure: VMP-S's backward scan at 8 frames, batch 16 (run on a GPU).
bench-gpu: setup
	$(BIN)/vmp bench-scan --batch 16 --dim 768 --lengths 1569

# The train issue's GPU figure: VMP-Ti, 8x224x224, bf16, 300 steps on in-memory clips.
bench-train-gpu: setup
	$(BIN)/vmp bench-train --config configs/k400_vmp_ti_f8.py --steps 300 \
	    --config.data.batch_size=32 --config.model.dtype=bfloat16 --out runs/bench-train

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
