# Thin wrapper over scripts/setup.sh, CMake presets and CTest. See README.md.
#   make up     install what is missing, build, start the local serving topology
#   make test   install what is missing, build, run unit + integration + e2e tests and validators
PRESET ?= release
JOBS   ?= $(shell nproc)
BIN     = build/$(PRESET)/apps/prfaas
# Everything make test runs; gpu tests self-skip without a GPU, fuzz targets run in CI via asan.
TEST_LABELS ?= unit|integration|e2e|deploy

.PHONY: all setup configure build up test test-asan test-tsan format format-check tidy clean

all: build

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build --preset $(PRESET) -j $(JOBS)

up: build
	$(BIN) up $(UP_ARGS)

test: build
	ctest --preset $(PRESET) -j $(JOBS) -L '$(TEST_LABELS)'

# Unit tests under a sanitizer preset (CI runs test-asan): builds only the unit-test targets
# (and what they link), then runs them; the deployment validators are not native code, skip them.
test-asan test-tsan: test-%: setup
	@cmake --preset $* >/dev/null
	@cmake --build --preset $* -j $(JOBS) --target $$(cat build/$*/test-targets-unit.txt)
	ctest --preset $* -j $(JOBS) -L unit -LE deploy

FORMAT_FILES = $(shell git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | grep -v '^third_party/')

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format-check: ok"

tidy: configure
	run-clang-tidy -quiet -p build/$(PRESET) $(FORMAT_FILES) 2>/dev/null || clang-tidy -p build/$(PRESET) $(filter %.cpp,$(FORMAT_FILES))

clean:
	rm -rf build
