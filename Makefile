# Thin front door over CMake + CTest. `make run` and `make test` install any
# missing Debian packages first (scripts/deps.sh).
#
# Installing (README "Install", docs/packaging.md):
#   make deb        build-deb/herald_VERSION_ARCH.deb (CPack; prefix /usr; Depends from dpkg-shlibdeps)
#   make deb-test   make deb, then as root: dpkg -i it, /usr/bin/herald --version, a publish/subscribe
#                   smoke test against the installed binary, dpkg -P (CI runs this)
#   cmake --install build   binary, herald(1), systemd unit and example config under
#                   CMAKE_INSTALL_PREFIX (default /usr/local; set it when configuring)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_TYPE ?= RelWithDebInfo
FUZZ_SECONDS ?= 20
SOAK_SECONDS ?= 600
ARGS ?=

.PHONY: all build run test test-asan test-tsan fuzz soak bench deb deb-test clean

all: build

build:
	@scripts/deps.sh build
	cmake -S . -B build -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	cmake --build build -j $(JOBS)

run: build
	./build/herald $(ARGS)

test:
	@scripts/deps.sh test
	cmake -S . -B build -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	cmake --build build -j $(JOBS)
	cd build && ctest --output-on-failure -j $(JOBS)

test-asan:
	@scripts/deps.sh test
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=address >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

# TSan: clang, the concurrency code (ring tests) and the integration suite,
# which drives cross-worker delivery through the real binary.
test-tsan:
	@scripts/deps.sh test fuzz
	CC=clang cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=thread >/dev/null
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j $(JOBS)

fuzz:
	@scripts/deps.sh fuzz
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DHERALD_FUZZ=ON >/dev/null
	cmake --build build-fuzz -j $(JOBS)
	scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS)

# Soak (issues 8 and 13): SOAK_SECONDS (default 600) of mixed normal and hostile load against the
# ASan build (--history on), then: RSS flat after warm-up, no loss, no sanitizer report. Not in CI.
# SOAK_SEED=N replays a run's random choices; SOAK_ARGS adds herald flags.
soak:
	@scripts/deps.sh test
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=address >/dev/null
	cmake --build build-asan -j $(JOBS)
	PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 tests/soak/soak.py --seconds $(SOAK_SECONDS) --bin build-asan/herald $(SOAK_ARGS)

bench:
	bench/run.sh $(ARGS)

# The package is built in its own tree: prefix /usr (config in /etc), no test targets.
deb:
	@scripts/deps.sh deb
	cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCMAKE_INSTALL_PREFIX=/usr -DHERALD_TESTS=OFF >/dev/null
	cmake --build build-deb -j $(JOBS)
	rm -f build-deb/herald_*.deb
	cd build-deb && cpack -G DEB

deb-test: deb
	@scripts/deps.sh test
	tests/package/test_deb.sh build-deb

clean:
	rm -rf build build-asan build-tsan build-fuzz build-deb
