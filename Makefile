# lcodec developer tasks. Every target sets up its own virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch goes in first, pinned, so that pip does not pull a multi-GB CUDA build here;
# elsewhere run e.g. `make TORCH=torch test` to take your platform's normal build.
TORCH  ?= torch==2.13.0
KODAK  ?= ../shared/data/kodak
TRAIN  ?= ../shared/data/train

.PHONY: setup demo test bench train train-context-e2e train-hyperprior train-context train-grouped fuzz clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/lcodec encode samples/coffee.png demo-out.lc -q 4 --force
	$(BIN)/lcodec decode demo-out.lc demo-out.png --force
	$(BIN)/lcodec info demo-out.lc
	$(BIN)/python -c "import numpy as n; from PIL import Image as I; a=n.asarray(I.open('samples/coffee.png').convert('RGB'),float); b=n.asarray(I.open('demo-out.png'),float); print('PSNR %.2f dB' % (10*n.log10(255**2/((a-b)**2).mean())))"

test: setup
	$(BIN)/python -m pytest -q

# BENCH_EFFORT=3 also measures the default model at encoder effort 3 (about 55 more minutes here).
BENCH_EFFORT ?=
bench: setup
	$(BIN)/pip install -q -e ".[test,eval]"
	$(BIN)/python -m lcodec.eval.benchmark --kodak $(KODAK) --out docs/ $(if $(BENCH_EFFORT),--effort $(BENCH_EFFORT))

# Longer fuzzing of the decoder (atheris when installed, else a built-in mutation loop).
FUZZ_SECONDS ?= 600
fuzz: setup
	OMP_NUM_THREADS=1 $(BIN)/python tests/fuzz_decode.py -max_total_time=$(FUZZ_SECONDS)

# One session of the weights campaign (see docs/model-card.md): the default `grouped` model
# trained end to end, every network together. Resumes runs/grouped-e2e with its optimizer state
# when it has a checkpoint (keep that folder between sessions), else starts from the newest
# shipped grouped weights; exports best.pt as the next version when it ends, with tables counted
# on every 5th training photo by name (as every version since grouped v17; a folder of links,
# runs/photos-every-5th). Probe it on Kodak and run `make bench` before committing it.
# The recipe is the chain's since run 105 (grouped v18-v20: lr 3e-5, warmup 300, the lr decaying
# over the last 35% of 130 minutes; docs/model-card.md has each run's command).
# END_TO_END_FLAGS are shared by every end-to-end recipe; CAMPAIGN_FLAGS add the lr schedule of
# the context and hyperprior recipes (runs 30-39).
END_TO_END_FLAGS = --gain-lr-mult 10 --level-weighting normalized --crop 256 --batch 4 --ste-frac 1.0 \
  --ema 0.999
CAMPAIGN_FLAGS = $(END_TO_END_FLAGS) --lr 1e-4 --warmup 300 --validate-every 500
train: setup runs/photos-every-5th
	$(BIN)/lcodec train --family grouped --data $(TRAIN) --run-dir runs/grouped-e2e --init-from grouped \
	  $(END_TO_END_FLAGS) --lr 3e-5 --warmup 300 --validate-every 300 --decay-frac 0.35 --minutes 130 \
	  --threads 2 --export grouped --count-tables-on runs/photos-every-5th

# More training photos: 23 photographs from two pinned Debian 12 packages (mate-backgrounds,
# plasma-workspace-wallpapers; ~140 MB fetched into runs/debs and checked against their SHA-256),
# halved into PNG (20.6 MP in all, ~17% of $(TRAIN)'s pixels). A run adds them to its training
# crops with `lcodec train ... --extra-data runs/registry-photos` (lcodec/train/registry_photos.py).
runs/registry-photos: | $(BIN)/.installed
	$(BIN)/python -m lcodec.train.registry_photos $@ --cache runs/debs

runs/photos-every-5th:
	rm -rf $@.tmp && mkdir -p $@.tmp
	ls $(TRAIN) | sort | awk 'NR%5==1' | while read -r f; do ln -s "$$(realpath "$(TRAIN)/$$f")" $@.tmp/; done
	test -n "$$(ls $@.tmp)" || { echo "no training photos in $(TRAIN)" >&2; rm -rf $@.tmp; exit 1; }
	mv $@.tmp $@

# The `context` model trained end to end (runs 36-39's recipe, context v10 and v11).
train-context-e2e: setup
	$(BIN)/lcodec train --family context --data $(TRAIN) --run-dir runs/context --init-from context \
	  $(CAMPAIGN_FLAGS) --decay-frac 0.35 --minutes 80 --export context

# The plain hyperprior's transforms alone (runs 30-31's recipe, hyperprior v9 and v10).
train-hyperprior: setup
	$(BIN)/lcodec train --data $(TRAIN) --run-dir runs/hyperprior --init-from hyperprior \
	  $(CAMPAIGN_FLAGS) --decay-frac 0.15 --minutes 110 --export hyperprior

# Context networks alone on top of the newest shipped hyperprior (its transforms stay frozen).
train-context: setup
	$(BIN)/lcodec train-context --data $(TRAIN) --init-from hyperprior --run-dir runs/context-networks --minutes 40 --export context

# Channel-group networks on top of the newest shipped context weights (frozen): run 46's recipe,
# which made grouped v1 (resumes runs/grouped when it has a checkpoint; grouped v2 is that folder
# resumed with --minutes 62 --lr 5e-4 --decay-frac 0.35, run 49).
train-grouped: setup
	$(BIN)/lcodec train-grouped --data $(TRAIN) --init-from context --run-dir runs/grouped --minutes 45 \
	  --validate-every 250 --export grouped

clean:
	rm -rf $(VENV) build dist *.egg-info demo-out.lc demo-out.png .pytest_cache
