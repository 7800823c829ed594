# mod_fastcgi-rs — build, test and ops targets.
#
#   make [build]      cargo build --release + target/release/mod_fastcgi.so
#   make deps         install missing Debian packages (apt-get; root only)
#   make test         deps, build, unit tests, clippy, integration tests per MPM (MPMS="event prefork worker"),
#                     httpd-tests' PHP tests (test-httpd), valgrind check, 60 s of fuzzing per target
#   make test-httpd   httpd's own test framework over PHP through the module (t/httpd-tests.sh)
#   make demo         private Apache + php-fpm on 127.0.0.1:$(DEMO_PORT) (scripts/demo.sh)
#   make demo-stop    stop the demo servers (by PID)
#   make install      install the module (apxs -i) + Debian mods-available files
#   make clippy       cargo clippy --release -- -D warnings
#   make fuzz         run every fuzz target for $(FUZZ_LONG_SECONDS)s (not part of `make test`);
#                     fuzz/corpus/<t> is read as seeds, new inputs go to fuzz/target/fuzz-corpus/<t>
#   make check-valgrind  the request-path integration suites with their Apache under valgrind
#                     memcheck (-X, prefork; MFCGI_VALGRIND=1); fails on a failed test, any
#                     memory error or a definite leak through mod_fastcgi
#   make fuzz-ci      every fuzz target for $(FUZZ_SECONDS)s, fails on a crash (scripts/fuzz-ci.sh)
#   make bench        benches/run.sh, if present
#   make bench-paired benches/paired.sh: the module against mod_proxy_fcgi and the static file in
#                     alternating slices with both servers up (ratios that hold on a noisy VM)
#   make clean        cargo clean, remove fuzz/target and .demo
#
# Rust comes from PATH or $HOME/.cargo/bin (rustup); `make deps` does not install it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
# Steps depend on each other's side effects (apt, cargo lock); never run them in parallel.
.NOTPARALLEL:

export PATH := $(HOME)/.cargo/bin:$(PATH)
export DEBIAN_FRONTEND := noninteractive

CARGO        ?= cargo
MPMS         ?= event prefork worker
TEST_TIMEOUT ?= 900
# check-valgrind: integration-test filters (suite names or test-name substrings) and time limit
VALGRIND_TESTS   ?= foundation conformance direct auth hostile status final harness_valgrind
VALGRIND_TIMEOUT ?= 600
FUZZ_SECONDS ?= 60
FUZZ_LONG_SECONDS ?= 600
DEMO_PORT    ?= 8080
DEMO_MPM     ?= event
DESTDIR      ?=
APXS         ?= $(shell command -v apxs || command -v apxs2 || echo apxs)
ENABLE       ?= 0

SO_BUILT := target/release/libmod_fastcgi.so
SO       := target/release/mod_fastcgi.so
# Built with --features test-panic in its own target dir (t/faults.rs, faults_panic_boundary).
PANIC_SO := target/test-panic/release/libmod_fastcgi.so

# Debian packages needed to build and test (php-fpm pulls php8.x-fpm; build-essential
# gives cc/ld for cargo and the C shim; libclang-dev is for bindgen).
DEB_PACKAGES := apache2 apache2-dev php-fpm libclang-dev curl wrk ca-certificates valgrind \
                build-essential pkg-config
# Only for the tests: the real PHP applications of t/apps.rs, t/wordpress.rs and
# t/phpmyadmin.rs (Debian's DokuWiki, WordPress and phpMyAdmin, copied into the test's temp
# dir; the installed copies are neither served nor changed) and the database server WordPress
# and phpMyAdmin need (started by the test under its temp dir; the system's MariaDB service is
# not used). `php` is named so that WordPress's "libapache2-mod-php | php" is met by php-fpm
# rather than by installing mod_php; `dbconfig-no-thanks` so that phpMyAdmin's package does not
# try to make a database in the system's MariaDB when it is installed.
# Symfony's HttpFoundation and Guzzle's PSR-7 are what t/modphp.rs's script derives URLs with;
# fcgiwrap and git serve and drive git's smart HTTP in t/git.rs.
TEST_DEB_PACKAGES := php dokuwiki php-sabre-dav litmus wordpress dbconfig-no-thanks phpmyadmin mariadb-server php-mysql iproute2 \
                     php-symfony-http-foundation php-guzzlehttp-psr7 fcgiwrap git
# Debian layout for `make install` (overridable for other layouts).
LIBEXECDIR   ?= $(shell $(APXS) -q LIBEXECDIR 2>/dev/null || echo /usr/lib/apache2/modules)
SYSCONFDIR   ?= $(shell $(APXS) -q SYSCONFDIR 2>/dev/null || echo /etc/apache2)

.PHONY: build deps deps-test check-cargo test unit lint integration demo demo-stop demo-status \
        install uninstall clippy fuzz bench bench-paired bench-many clean test-panic-module check-valgrind fuzz-ci

# ---------------------------------------------------------------------------------------
check-cargo:
	@command -v $(CARGO) >/dev/null || { \
	  echo "ERROR: cargo not found in PATH or $$HOME/.cargo/bin." >&2; \
	  echo "       Install the Rust toolchain (https://rustup.rs: rustup toolchain install stable)." >&2; \
	  exit 1; }

build: check-cargo
	$(CARGO) build --release
	@# `install` writes a new inode, so a running Apache keeps its mapping of the old file.
	install -m 0644 $(SO_BUILT) $(SO)
	@echo "built $(SO)"

# ---------------------------------------------------------------------------------------
# install_debs: install the Debian packages of $(1) that are missing (as root; otherwise say how)
define install_debs
missing=""; \
for p in $(1); do \
  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing="$$missing $$p"; \
done; \
if [ -z "$$missing" ]; then \
  echo "deps: all Debian packages present ($(1))"; \
elif [ "$$(id -u)" -ne 0 ]; then \
  echo "ERROR: missing Debian packages:$$missing" >&2; \
  echo "       install them as root: apt-get install -y --no-install-recommends$$missing" >&2; \
  exit 1; \
else \
  echo "deps: installing:$$missing"; \
  apt-get -o DPkg::Lock::Timeout=300 update; \
  apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 $$missing; \
fi
endef

deps:
	@$(call install_debs,$(DEB_PACKAGES))
	@command -v $(CARGO) >/dev/null && echo "deps: $$($(CARGO) --version)" || { \
	  echo "ERROR: cargo not found in PATH or $$HOME/.cargo/bin; install Rust with rustup." >&2; exit 1; }

# ---------------------------------------------------------------------------------------
test: deps deps-test build unit lint integration test-httpd check-valgrind fuzz-ci

# httpd's own test framework (Debian's copy of httpd-tests, fetched with apt-get source) over
# PHP served through the module and php-fpm (t/httpd-tests.sh): event with the pool, prefork
# with one connection per request.
test-httpd: build
	@failed=""; \
	for run in "event 1" "prefork 0"; do \
	  set -- $$run; \
	  MPM=$$1 POOL=$$2 MOD_FASTCGI_SO="$${MOD_FASTCGI_SO:-$(CURDIR)/$(SO_BUILT)}" \
	    timeout -k 30 600 bash t/httpd-tests.sh </dev/null || failed="$$failed $$1"; \
	done; \
	if [ -n "$$failed" ]; then echo "httpd-tests failed for MPM(s):$$failed" >&2; exit 1; fi

# mpm-itk (pool suite) and mod_php (modphp suite, the reference the module's variables are
# compared with) are unpacked from their packages under target/, not installed: installing
# libapache2-mpm-itk or libapache2-mod-php switches the system's Apache to prefork.
ITK_DIR := target/test-deps/mpm-itk
MODPHP_DIR := target/test-deps/mod-php
# unpack_deb: download Debian package $(1) and unpack it into $(2) (apt-get update once if needed)
define unpack_deb
rm -rf $(2) && mkdir -p $(2) && cd $(2) && \
{ apt-get download $(1) \
  || { [ "$$(id -u)" -eq 0 ] && apt-get -o DPkg::Lock::Timeout=300 update && apt-get download $(1); }; } && \
dpkg-deb -x $(1)_*.deb . && echo "deps: $(1) unpacked under $(2)"
endef
deps-test: deps
	@$(call install_debs,$(TEST_DEB_PACKAGES))
	@if [ ! -f $(ITK_DIR)/usr/lib/apache2/modules/mpm_itk.so ]; then \
	  $(call unpack_deb,libapache2-mpm-itk,$(ITK_DIR)); \
	fi
	@v=$$(ls /usr/sbin/ | sed -n 's/^php-fpm\([0-9][0-9.]*\)$$/\1/p' | sort -V | tail -n 1); \
	if [ -z "$$v" ]; then echo "ERROR: no /usr/sbin/php-fpm<version>" >&2; exit 1; fi; \
	if [ ! -f $(MODPHP_DIR)/usr/lib/apache2/modules/libphp$${v}.so ]; then \
	  $(call unpack_deb,libapache2-mod-php$${v},$(MODPHP_DIR)); \
	fi

# clippy with -D warnings (undocumented_unsafe_blocks is on in src/lib.rs); skipped with a
# notice where the clippy component is not installed.
lint: check-cargo
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
	  $(CARGO) clippy --release --all-targets -- -D warnings; \
	else echo "lint: cargo clippy not installed; skipped"; fi
	@if $(CARGO) fmt --version >/dev/null 2>&1; then \
	  $(CARGO) fmt --check || { echo "lint: run cargo fmt"; exit 1; }; \
	else echo "lint: rustfmt not installed; skipped"; fi

unit: check-cargo
	$(CARGO) test --lib

# The module with the test-only panic trigger, for the panic-boundary test (own target dir:
# never mixed up with the real build).
test-panic-module: check-cargo
	CARGO_TARGET_DIR=$(CURDIR)/target/test-panic $(CARGO) build --release --features test-panic

# Runs every MPM in $(MPMS) even if one fails, then fails if any failed.
integration: check-cargo build test-panic-module
	@failed=""; \
	for mpm in $(MPMS); do \
	  echo "=== integration tests, MPM=$$mpm (timeout $(TEST_TIMEOUT)s)"; \
	  if MPM=$$mpm MOD_FASTCGI_SO="$${MOD_FASTCGI_SO:-$(CURDIR)/$(SO_BUILT)}" \
	       MFCGI_PANIC_SO="$${MFCGI_PANIC_SO:-$(CURDIR)/$(PANIC_SO)}" \
	       timeout -k 30 $(TEST_TIMEOUT) $(CARGO) test --release --test integration </dev/null; then \
	    echo "=== MPM=$$mpm: OK"; \
	  else \
	    rc=$$?; echo "=== MPM=$$mpm: FAILED (exit $$rc$$( [ $$rc -eq 124 ] && echo ', timed out'))"; \
	    failed="$$failed $$mpm"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then echo "integration tests failed for MPM(s):$$failed" >&2; exit 1; fi; \
	echo "integration tests passed for MPM(s): $(MPMS)"

# ---------------------------------------------------------------------------------------
demo: deps build
	DEMO_PORT=$(DEMO_PORT) DEMO_MPM=$(DEMO_MPM) MOD_FASTCGI_SO="$(CURDIR)/$(SO)" scripts/demo.sh start

demo-stop:
	scripts/demo.sh stop

demo-status:
	scripts/demo.sh status

# ---------------------------------------------------------------------------------------
# Installs $(SO) as $(LIBEXECDIR)/mod_fastcgi.so with apxs. On Debian (mods-available
# exists) it also installs fastcgi.load/fastcgi.conf so `a2enmod fastcgi` works; the module
# is enabled only with ENABLE=1 (Debian's `apxs -a` would overwrite our fastcgi.load, keep a
# .bak~ copy and run a2enmod itself, so it is not used there). Elsewhere `apxs -i -a` adds
# the LoadModule line to httpd.conf (not with DESTDIR). Reload Apache afterwards yourself.
install:
	@test -f $(SO) || { echo "ERROR: $(SO) missing; run 'make build' first (as your build user)" >&2; exit 1; }
	install -d $(DESTDIR)$(LIBEXECDIR)
	@if [ -d "$(DESTDIR)$(SYSCONFDIR)/mods-available" ] || [ -d "$(SYSCONFDIR)/mods-available" ]; then \
	  ( set -x; \
	    $(APXS) -i -S LIBEXECDIR=$(DESTDIR)$(LIBEXECDIR) -n fastcgi $(SO); \
	    install -d $(DESTDIR)$(SYSCONFDIR)/mods-available; \
	    install -m 0644 conf-examples/debian/fastcgi.load $(DESTDIR)$(SYSCONFDIR)/mods-available/fastcgi.load; \
	    install -m 0644 conf-examples/debian/fastcgi.conf $(DESTDIR)$(SYSCONFDIR)/mods-available/fastcgi.conf ); \
	  if [ "$(ENABLE)" = 1 ] && [ -z "$(DESTDIR)" ]; then ( set -x; a2enmod fastcgi ); \
	  else echo "installed; enable with: a2enmod fastcgi, then apache2ctl -t && apache2ctl graceful"; fi; \
	elif [ -n "$(DESTDIR)" ]; then \
	  ( set -x; $(APXS) -i -S LIBEXECDIR=$(DESTDIR)$(LIBEXECDIR) -n fastcgi $(SO) ); \
	else \
	  ( set -x; $(APXS) -i -a -n fastcgi $(SO) ); \
	fi

# Reverts `make install` on Debian (module file and mods-available files).
uninstall:
	-@if [ -z "$(DESTDIR)" ] && [ -e $(SYSCONFDIR)/mods-enabled/fastcgi.load ]; then a2dismod -q -f -p fastcgi; fi
	rm -f $(DESTDIR)$(LIBEXECDIR)/mod_fastcgi.so \
	      $(DESTDIR)$(SYSCONFDIR)/mods-available/fastcgi.load \
	      $(DESTDIR)$(SYSCONFDIR)/mods-available/fastcgi.conf

# ---------------------------------------------------------------------------------------
clippy: check-cargo
	@$(CARGO) clippy --version >/dev/null 2>&1 || { \
	  if command -v rustup >/dev/null; then rustup component add clippy; \
	  else echo "ERROR: cargo clippy missing and no rustup to install it" >&2; exit 1; fi; }
	$(CARGO) clippy --release --all-targets -- -D warnings

# Longer fuzzing by hand: every target for FUZZ_LONG_SECONDS (the corpus grows in
# fuzz/target/fuzz-corpus/<target>).
fuzz: check-cargo
	FUZZ_SECONDS=$(FUZZ_LONG_SECONDS) CARGO=$(CARGO) scripts/fuzz-ci.sh

# Memory check: the request-path suites with the suite's Apache under valgrind memcheck as one
# process (t/support/valgrind.rs); after the last test Apache is stopped and the memcheck log
# judged (test valgrind_memcheck). Installs valgrind if missing (apt-get, root only).
check-valgrind: build
	@command -v valgrind >/dev/null || { \
	  if [ "$$(id -u)" -ne 0 ]; then \
	    echo "ERROR: valgrind missing; install it as root: apt-get install valgrind" >&2; exit 1; fi; \
	  echo "check-valgrind: installing valgrind"; \
	  apt-get -o DPkg::Lock::Timeout=300 update; \
	  apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 valgrind; }
	MFCGI_VALGRIND=1 MPM=prefork MOD_FASTCGI_SO="$${MOD_FASTCGI_SO:-$(CURDIR)/$(SO_BUILT)}" \
	  timeout -k 30 $(VALGRIND_TIMEOUT) $(CARGO) test --release --test integration -- $(VALGRIND_TESTS) </dev/null

# CI fuzzing: FUZZ_SECONDS per target, fails on any crash (scripts/fuzz-ci.sh builds the
# targets with cargo-fuzz's instrumentation without needing cargo-fuzz).
fuzz-ci: check-cargo
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) scripts/fuzz-ci.sh

bench:
	@if [ -f benches/run.sh ]; then bash benches/run.sh; \
	else echo "benches/run.sh is not there yet; nothing to benchmark"; fi

# Paired A/B: two variants up at once, alternating short slices (benches/paired.sh, which
# installs what it lacks through `make deps`). The README's paired tables come from these runs
# (about 25 minutes in all).
bench-paired:
	A=fcgi-pool B=proxy-reuse WORKLOADS="hello 1mib post256k null" bash benches/paired.sh
	A=fcgi-pool B=static WORKLOADS="hello 1mib null" bash benches/paired.sh
	A=fcgi-nopool B=proxy WORKLOADS="hello" bash benches/paired.sh
	A=fcgi-pool B=proxy-reuse POLICY_A=batch POLICY_B=batch WORKLOADS="hello 1mib null" bash benches/paired.sh

# hosting scale: N vhosts with one FastCgiExternalServer each (RSS, idle CPU); not in make test
bench-many:
	bash benches/many.sh

clean:
	-scripts/demo.sh stop
	-$(CARGO) clean
	rm -rf fuzz/target
	@# .demo may be a symlink to the /tmp fallback used when www-data cannot reach the repo.
	@if [ -L .demo ] && [ "$$(readlink .demo)" = /tmp/mod_fastcgi-demo ]; then rm -rf /tmp/mod_fastcgi-demo; fi
	rm -rf .demo
