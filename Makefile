# crossfeed — the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo
BIN := target/release/crossfeed

.PHONY: build demo test bench fixtures check-saved clean

build:
	$(CARGO) build --release -p crossfeed-cli

# The main job on the embedded default: the full loop (generate -> pool -> subsample -> fine-tune ->
# evaluate) for K = 2 entities, then the paper-style report (runs/demo/report.md).
demo: build
	$(BIN) run --name demo
	$(BIN) report runs/demo

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
