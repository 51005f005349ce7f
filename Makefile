# ifscale: every user-facing target depends on `setup`, so a fresh clone needs only `make <target>`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA_DIR ?= .cache/data
MNIST  := $(DATA_DIR)/mnist.pkl.gz
# Extra Hydra overrides, e.g. `make train ARGS="train.epochs=1 seed=3"`.
ARGS   ?=
# Corpus of `make table2`: wmt17 (tensorflow-datasets, internet access) or, offline,
# multi30k / wmt_sample (../shared/data) or parallel_text with ARGS="dataset.path=...".
DATA   ?= wmt17
# Corpus of `make table3`: paracrawl (internet access) or, offline, noisy_parallel_text.
DATA3  ?= paracrawl
# `make score-sharded` / `make merge`: the experiment and method to score in SHARDS jobs
# on LAUNCHER (local: joblib processes here; submitit_local; slurm: a SLURM job array).
EXP      ?= train_small
METHOD   ?= arnoldi
SHARDS   ?= 2
LAUNCHER ?= local

# `make table1 SEEDS=3`: also Table 1's fast rows at seeds 1..SEEDS-1 (mean ± sd);
# `make regimes SEEDS=2`: seeds 0..SEEDS-1 (default 3). A count, checked here.
SEEDS  ?=
ifneq ($(SEEDS),)
ifneq ($(shell echo '$(SEEDS)' | grep -Ex '[1-9][0-9]*'),$(SEEDS))
$(error SEEDS is a number of seeds, e.g. SEEDS=3 (got '$(SEEDS)'))
endif
endif

.DEFAULT_GOAL := help
.PHONY: help setup test test-slow lint format train train-small table1 table1-check explain explain-translation explain-check figures table2 table2-check table3 table3-check regimes regimes-memorised lds lds-check score-sharded merge bench bench-memory scale-check notebook clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) $(MNIST) ## Create .venv, install ifscale with its dev extra, fetch MNIST (idempotent)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "ifscale needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(MNIST): | $(STAMP)
	$(PY) -m ifscale.data --data-dir $(DATA_DIR)

# Two pytest-xdist workers, one test file each at a time (a file's module fixtures run once).
test: setup ## Run the fast test suite (about 11 minutes on 2 CPU cores)
	$(PY) -m pytest -m "not slow" -q -n 2 --dist loadfile --durations=15

test-slow: setup ## Run the slow end-to-end tests
	$(PY) -m pytest -m slow -q; rc=$$?; [ $$rc -eq 5 ] && echo "no slow tests yet" && rc=0; exit $$rc

lint: setup ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: setup ## Train cnn_large on the full MNIST with 10% mislabeled examples
	$(PY) experiments/run.py experiment=train_large $(ARGS)

train-small: setup ## Train cnn_small on the 10% MNIST subset with 10% mislabeled examples
	$(PY) experiments/run.py experiment=train_small $(ARGS)

table1: setup ## Table 1: 8 methods on cnn_large, 60,000 MNIST -> results/table1.{md,csv} (FULL=1: all rows on all examples; SEEDS=3: fast rows as mean ± sd)
	$(PY) experiments/run.py experiment=table1 $(if $(FULL),score.compare_examples=null) $(ARGS)
	$(if $(filter-out 1,$(SEEDS)),$(PY) experiments/run.py experiment=table1_seeds 'seed=range(1,$(SEEDS))' $(ARGS))
	$(PY) experiments/report.py table1

table1-check: setup ## After table1: variants of the Arnoldi p̄=10 row (eigenvalues, n, epochs), added to results/table1.md
	$(PY) experiments/run.py experiment=table1_check $(ARGS)
	$(PY) experiments/report.py table1

explain: setup ## Proponents/opponents of 16 misclassified MNIST test images (Arnoldi p̄=100, Table 1's model) -> results/explain_mnist/
	$(PY) experiments/run.py experiment=explain_mnist $(ARGS)
	$(PY) experiments/report.py explain

explain-translation: setup ## Proponents/opponents of 8 Multi30k test pairs (transformer_tiny) -> results/explain_translation/
	$(PY) experiments/run.py experiment=explain_translation $(ARGS)
	$(PY) experiments/report.py explain

explain-check: setup ## Explanations against retraining without proponents/opponents (cnn_small) -> results/explain.{md,csv}
	$(PY) experiments/explain_check.py $(ARGS)

figures: setup ## Figures 1-2: cnn_small on the 10% subset -> results/figures/
	$(PY) experiments/run.py experiment=figures $(ARGS)
	$(PY) experiments/run.py experiment=figures_baselines $(ARGS)
	$(PY) experiments/report.py figures

regimes: setup ## Memorisation regimes: cnn_large on the 10% subset for E epochs, every method, 3 seeds -> results/regimes.{md,csv} (EPOCHS=2,5,... SEEDS=3)
	$(PY) experiments/run.py experiment=regimes $(if $(EPOCHS),train.epochs=$(EPOCHS)) $(if $(SEEDS),'seed=range($(SEEDS))') $(ARGS)
	$(PY) experiments/report.py regimes

regimes-memorised: setup ## The regimes at E = 50 only (memorised labels), every row with TracIn [k]'s rivals over the same checkpoints -> results/regimes_memorised.{md,csv}
	$(PY) experiments/run.py experiment=regimes_memorised $(ARGS)
	$(PY) experiments/report.py regimes --experiment regimes_memorised

# The LDS settings of `make lds` (LDS=lds_logreg: one of them), and how the LDS moves with K
# (3 models per subset, logistic regression).
LDS ?= lds_logreg lds_mlp lds_cnn
# TRAK on the ground truths of lds_logreg and lds_mlp (stored by the loop above), and
# K-FAC/EK-FAC on all three.
LDS_TRAK ?= lds_trak_logreg lds_trak_mlp lds_kfac_logreg lds_kfac_mlp lds_kfac_cnn
LDS_SEEDS = experiment=lds_logreg name=lds_seeds lds.seeds=3

lds: setup ## Linear datamodeling score: every method (TRAK against M, K-FAC, EK-FAC too) on dattri's MNIST-10 (logreg, MLP) and cnn_small -> results/lds.{md,csv}
	for e in $(LDS); do \
	  $(PY) experiments/run.py experiment=$$e stage=retrain hydra.mode=RUN lds.sequential=4 $(ARGS) && \
	  $(PY) experiments/run.py experiment=$$e $(ARGS) || exit 1; \
	done
	for e in $(LDS_TRAK); do $(PY) experiments/run.py experiment=$$e $(ARGS) || exit 1; done
	$(PY) experiments/run.py $(LDS_SEEDS) stage=retrain hydra.mode=RUN $(ARGS)
	$(PY) experiments/run.py $(LDS_SEEDS) '+lds_methods=graddot,tracin_10,arnoldi_dattri,arnoldi_p100,arnoldi_tail_p100,exact' $(ARGS)
	$(PY) experiments/report.py lds

# make lds-check: a small make lds (logistic regression on the first 1,000 images, 20 subsets,
# 100 test images, 5 methods, ~3 minutes) into $(LDS_CHECK)/; make test-slow runs it.
LDS_CHECK ?= outputs/lds_check
LDS_SMALL = experiment=lds_logreg name=lds_check dataset.subset_size=1000 lds.subsets=20 lds.test_examples=100 lds.validation_examples=50 method.fit_batch_size=100

lds-check: setup ## A small make lds (logreg on 1,000 images, 20 subsets, 5 methods) -> $(LDS_CHECK)/results/lds.md
	$(PY) experiments/run.py $(LDS_SMALL) stage=retrain hydra.mode=RUN lds.sequential=2 hydra.run.dir=$(LDS_CHECK)/outputs/lds_check/retrain $(ARGS)
	$(PY) experiments/run.py $(LDS_SMALL) '+lds_methods=graddot,tracin_1,arnoldi_dattri,exact,trak_k512_m1' hydra.sweep.dir=$(LDS_CHECK)/sweep $(ARGS)
	$(PY) experiments/report.py lds --sweep $(LDS_CHECK)/sweep --outputs $(LDS_CHECK)/outputs --results $(LDS_CHECK)/results

table2: setup ## Table 2: Transformer, 6% permuted references -> results/table2.{md,csv} (DATA=multi30k: offline)
	$(PY) experiments/run.py experiment=table2 dataset=$(DATA) $(if $(FULL),score.max_examples=null) $(ARGS)
	$(PY) experiments/run.py experiment=table2_baselines dataset=$(DATA) $(if $(FULL),score.max_examples=null) $(ARGS)
	$(PY) experiments/run.py experiment=table2_kfac dataset=$(DATA) $(if $(FULL),score.max_examples=null) $(ARGS)
	$(PY) experiments/report.py table2

table2-check: setup ## After table2: TracIn [1] and a larger Arnoldi per layer set, added to results/table2.md
	$(PY) experiments/run.py experiment=table2_check dataset=$(DATA) $(ARGS)
	$(PY) experiments/report.py table2

table3: setup ## Table 3: data cleaning by self-influence, judged by BLEU -> results/table3.{md,csv} (DATA3=noisy_parallel_text: offline)
	$(PY) experiments/run.py experiment=table3 dataset=$(DATA3) $(ARGS)
	$(PY) experiments/report.py table3

table3-check: setup ## After table3: influence rows with a length-normalised loss or length-stratified selection -> results/table3.md
	$(PY) experiments/run.py experiment=table3_check dataset=$(DATA3) $(ARGS)
	$(PY) experiments/report.py table3

score-sharded: setup ## Score EXP with METHOD in SHARDS jobs on LAUNCHER (local | submitit_local | slurm): fit once, then the shards, merged
	$(PY) experiments/run.py experiment=$(EXP) method=$(METHOD) stage=fit $(ARGS)
	$(PY) experiments/run.py -m experiment=$(EXP) method=$(METHOD) stage=score score.require_fit=true \
	  score.shards=$(SHARDS) 'score.shard=range($(SHARDS))' launcher=$(LAUNCHER) $(ARGS)

merge: setup ## Gather the stored shards of EXP/METHOD/SHARDS by hand (names any missing shard)
	$(PY) experiments/merge.py experiment=$(EXP) method=$(METHOD) score.shards=$(SHARDS) $(ARGS)

bench: setup ## Speed of self-influence on cnn_large (examples/s, ratio to forward+backward)
	$(PY) experiments/bench.py $(ARGS)

# Issue 31 part A, on one GPU (no `setup`: the device machine has JAX and no internet). Each
# step writes its JSON before the next starts; BUDGET bounds the two scale checks (seconds).
# On an 80 GB card the 105M model needs its basis in bfloat16 (SCALE_DTYPE=bfloat16).
SCALE_PY    ?= $(PYTHON)
SCALE_DTYPE ?= float32
BUDGET      ?= 200
# Extra scale_check options for both models, e.g. SCALE_ARGS="--corpus /data/multi30k".
SCALE_ARGS  ?=
scale-check: ## GPU: bench, then the 55.6M and 105M Transformers fitted and scored -> results/gpu/*.json
	mkdir -p results/gpu
	timeout 150 env PYTHONPATH=. $(SCALE_PY) experiments/bench.py --examples 2048 \
	  --out results/gpu/bench.json || echo "bench: exit $$?"
	PYTHONPATH=. $(SCALE_PY) experiments/scale_check.py --preset 55m --steps 100 \
	  --offload-n 32 --budget-s $(BUDGET) --out results/gpu/scale_check_55m.json $(SCALE_ARGS) \
	  || true
	PYTHONPATH=. $(SCALE_PY) experiments/scale_check.py --preset 100m --steps 50 \
	  --offload-n 16 --basis-dtype $(SCALE_DTYPE) --budget-s $(BUDGET) \
	  --out results/gpu/scale_check_100m.json $(SCALE_ARGS)

bench-memory: setup ## Peak RSS of the scoring stage at 60,000 and 600,000 examples (MNIST x10, memory-mapped) -> results/bench_memory.md
	$(PY) experiments/bench_memory.py $(ARGS)

clean: ## Remove run folders (outputs/); keeps .venv and the cache
	rm -rf outputs multirun

notebook: setup ## Execute notebooks/inspect_results.ipynb in place on results/ (reads results/ only)
	$(PY) experiments/notebook.py
