# Thin wrapper around CMake. Every target first makes sure the Debian packages it needs exist.
BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

# Packages the build, the tests and the dev server need (Debian 12 names).
DEPS := cmake make gcc clang pkg-config openssl curl \
	libuv1-dev libsqlite3-dev libmaxminddb-dev libinih-dev \
	libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libmbedtls-dev libcmocka-dev libjansson-dev \
	etcd-server etcd-client iproute2 \
	libmaxmind-db-writer-perl mmdb-bin python3 python3-grpcio python3-protobuf sqlite3 \
	libclang-rt-14-dev build-essential debhelper dpkg-dev fakeroot lintian \
	libmicrohttpd-dev protobuf-compiler grpc-proto prometheus valgrind \
	haproxy nginx libnginx-mod-stream
LINT_DEPS  := clang-tidy cppcheck
BENCH_DEPS := haproxy nginx libnginx-mod-stream sniproxy util-linux iproute2 libssl-dev

.PHONY: deps build mc-proxy test test-asan valgrind devserver deb all lint format fuzz bench clean

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

# The proxy in the foreground with the example config (written to $(SRV)/ on the first run),
# plus a demo TLS backend (openssl s_server -www, a throwaway self-signed certificate in
# $(SRV)/demo/) on the example routes' backend address, so that the first connection through
# the proxy succeeds. The demo backend stops when the proxy exits.
SRV          ?= srv
DEMO_BACKEND ?= 127.0.0.1:9443
devserver: build
	@mkdir -p $(SRV)/demo
	@[ -f $(SRV)/mc-proxy.ini ] || \
	  sed 's#/srv/mc-proxy#$(abspath $(SRV))#g' examples/mc-proxy.ini > $(SRV)/mc-proxy.ini
	@[ -f $(SRV)/demo/backend.pem ] || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
	  -subj /CN=app.example.com -addext subjectAltName=DNS:app.example.com,DNS:localhost \
	  -keyout $(SRV)/demo/backend.key -out $(SRV)/demo/backend.pem 2>/dev/null
	@openssl s_server -quiet -www -accept $(DEMO_BACKEND) -cert $(SRV)/demo/backend.pem \
	  -key $(SRV)/demo/backend.key </dev/null >$(SRV)/demo/backend.log 2>&1 & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT; trap : INT TERM; \
	sleep 0.3; if kill -0 $$demo 2>/dev/null; then \
	  echo "devserver: demo TLS backend on $(DEMO_BACKEND) (pid $$demo)"; \
	else echo "devserver: the demo backend could not start on $(DEMO_BACKEND):" \
	  "$$(cat $(SRV)/demo/backend.log)" >&2; fi; \
	$(BUILD)/cli/mc-proxy server -c $(SRV)/mc-proxy.ini

# The Debian packages mc-proxy, libmcproxy0.1 and libmcproxy-dev, built from a temporary copy
# of the source and checked with lintian: see packaging/build-deb.sh. Output in build-deb/.
deb: deps
	packaging/build-deb.sh $(CURDIR)/build-deb

lint: EXTRA_DEPS = $(LINT_DEPS)
lint: deps $(BUILD)/CMakeCache.txt
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I include lib cli
	clang-tidy -p $(BUILD) --quiet lib/*.c cli/*.c

format:
	clang-format -i include/mcproxy/*.h lib/*.c lib/*.h cli/*.c cli/*.h test/unit/*.c fuzz/*.c

# The real binary under valgrind: start, proxied TLS connections, an admin change, SIGTERM;
# exit 0 and no valgrind error (test/integration/test_valgrind.py, also part of `make test`).
valgrind: build
	cd $(BUILD) && ctest --output-on-failure -R '^it\.test_valgrind$$' --timeout 300

all: build lint test-asan valgrind

# Runs the ClientHello fuzzer, then the PROXY protocol fuzzer, for FUZZ_SECONDS (default 60)
# each, from the captured vectors.
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DMCP_FUZZ=ON
	cmake --build build-fuzz -j $(JOBS) --target fuzz_sni
	mkdir -p fuzz-out/corpus && cp -n test/vectors/*.bin fuzz-out/corpus/ 2>/dev/null || true
	build-fuzz/fuzz/fuzz_sni -max_total_time=$(FUZZ_SECONDS) -max_len=20000 fuzz-out/corpus
	cmake --build build-fuzz -j $(JOBS) --target fuzz_proxy_protocol
	mkdir -p fuzz-out/corpus-proxy && cp -n test/vectors/haproxy_*.bin fuzz-out/corpus-proxy/ 2>/dev/null || true
	build-fuzz/fuzz/fuzz_proxy_protocol -max_total_time=$(FUZZ_SECONDS) -max_len=4200 \
	  -dict=fuzz/proxy_protocol.dict fuzz-out/corpus-proxy

bench: EXTRA_DEPS = $(BENCH_DEPS)
bench: build
	cmake --build $(BUILD) -j $(JOBS) --target bench-tools
	bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-fuzz build-deb
