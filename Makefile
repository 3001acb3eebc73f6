# Quick start: `make demo` and `make test` (each installs dependencies and builds first).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps configure build cli test demo fuzz fuzz-smoke clean

deps:
	bash scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The demo needs only the CLI binary: skipping tests and benchmarks halves the build on 2 cores.
cli: configure
	cmake --build $(BUILD) -j $(JOBS) --target patchllm

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: cli
	bash scripts/demo.sh $(BUILD)

# libFuzzer targets for every file parser (clang, ASan + UBSan): tools/fuzz.sh, SECONDS_PER_TARGET each (default 60).
fuzz: deps
	bash scripts/install-deps.sh --fuzz
	RELEASE_BUILD=$(BUILD) bash tools/fuzz.sh

# CI: every target on its seeds plus 300 inputs from a fixed seed (deterministic), under the sanitizers.
fuzz-smoke: build
	bash scripts/install-deps.sh --fuzz
	RELEASE_BUILD=$(BUILD) RUNS=300 bash tools/fuzz.sh

clean:
	rm -rf $(BUILD)
