# Thin wrapper around CMake. Every target first makes sure the Debian packages it needs exist.
BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

# Packages the build, the tests and the dev server need (Debian 12 names).
DEPS := cmake make gcc clang pkg-config openssl curl \
	libuv1-dev libsqlite3-dev libmaxminddb-dev libinih-dev \
	libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libmbedtls-dev libcmocka-dev libjansson-dev \
	etcd-server etcd-client \
	libmaxmind-db-writer-perl mmdb-bin python3 python3-grpcio python3-protobuf sqlite3 \
	libclang-rt-14-dev build-essential debhelper dpkg-dev fakeroot lintian
LINT_DEPS  := clang-tidy cppcheck
BENCH_DEPS := haproxy nginx libnginx-mod-stream sniproxy util-linux

.PHONY: deps build mc-proxy test test-asan devserver all lint format fuzz bench clean

deps:
	@missing=$$(for p in $(DEPS) $(EXTRA_DEPS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

mc-proxy: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target mc-proxy

test: build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 300

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMCP_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 2 --timeout 600

devserver: build
	@mkdir -p srv
	@[ -f srv/mc-proxy.ini ] || sed 's#/srv/mc-proxy#$(CURDIR)/srv#g' examples/mc-proxy.ini > srv/mc-proxy.ini
	$(BUILD)/cli/mc-proxy server -c srv/mc-proxy.ini

lint: EXTRA_DEPS = $(LINT_DEPS)
lint: deps $(BUILD)/CMakeCache.txt
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I include lib cli
	clang-tidy -p $(BUILD) --quiet lib/*.c cli/*.c

format:
	clang-format -i include/mcproxy/*.h lib/*.c lib/*.h cli/*.c cli/*.h test/unit/*.c fuzz/*.c

all: build lint test-asan

# Runs the ClientHello fuzzer for FUZZ_SECONDS (default 60) from the captured vectors.
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DMCP_FUZZ=ON
	cmake --build build-fuzz -j $(JOBS) --target fuzz_sni
	mkdir -p fuzz-out/corpus && cp -n test/vectors/*.bin fuzz-out/corpus/ 2>/dev/null || true
	build-fuzz/fuzz/fuzz_sni -max_total_time=$(FUZZ_SECONDS) -max_len=20000 fuzz-out/corpus

bench: EXTRA_DEPS = $(BENCH_DEPS)
bench: build
	cmake --build $(BUILD) -j $(JOBS) --target bench-tools
	bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
