# The sandbox inside gVisor: `make gvisor-test` runs the real `pyexec sandbox --isolation gvisor`
# inside runsc, in a container made the way a gVisor sandbox pod is, each case once cold and once
# through `--job-on-stdin` (hack/gvisor/sandbox-in-gvisor.sh records every run into a directory),
# then checks the records with tests/gvisor/gvisor_sandbox.rs (PYEXEC_GVISOR_RESULTS names the
# directory; that test is `test = false` in Cargo.toml, so only this target runs it).
# Included by the top Makefile (`include hack/gvisor.mk`). Needs root, Go for the first build of
# runsc (cached outside the repository afterwards, about 3 minutes cold) and `make setup`'s .tools;
# with runsc cached it takes well under a minute. Idempotent: every container, bundle and
# temporary directory is removed, on failure too.
#   make gvisor-test                       every case, platform systrap
#   make gvisor-test GVISOR_PLATFORM=ptrace GVISOR_CASES="hello stdin_timeout"

CARGO ?= cargo
GVISOR_PLATFORM ?= systrap
# Empty runs every case; names as in tests/gvisor/gvisor_sandbox.rs (`stdin_` for the --job-on-stdin runs).
GVISOR_CASES ?=

##@ Test

.PHONY: gvisor-test
gvisor-test: ## Run `pyexec sandbox --isolation gvisor` inside runsc and check the envelopes
	$(CARGO) build --locked --bin pyexec
	$(CARGO) test --locked --test gvisor_sandbox --no-run
	@results=$$(mktemp -d /tmp/pyexec-gvisor-results.XXXXXX); \
	  PLATFORM=$(GVISOR_PLATFORM) PYEXEC_BIN=$(CURDIR)/target/debug/pyexec \
	    $(CURDIR)/hack/gvisor/sandbox-in-gvisor.sh "$$results" $(GVISOR_CASES) && \
	  PYEXEC_GVISOR_RESULTS="$$results" $(CARGO) test --locked --test gvisor_sandbox -- \
	    $(if $(GVISOR_CASES),--exact $(GVISOR_CASES)); \
	  status=$$?; rm -rf "$$results"; exit $$status
