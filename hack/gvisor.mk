# The sandbox inside gVisor: `make gvisor-test` runs the real `pyexec sandbox --isolation gvisor`
# inside runsc, in a container made the way a gVisor sandbox pod is, and checks the envelopes
# (hack/gvisor/sandbox-in-gvisor.sh). Included by the top Makefile (`include hack/gvisor.mk`).
# Needs root, Go for the first build of runsc (cached outside the repository afterwards, about
# 3 minutes cold) and `make setup`'s .tools; with runsc cached it takes well under a minute.
# Idempotent: every container, bundle and temporary directory is removed, on failure too.
#   make gvisor-test                       every case, platform systrap
#   make gvisor-test GVISOR_PLATFORM=ptrace GVISOR_CASES="hello timeout"

CARGO ?= cargo
GVISOR_PLATFORM ?= systrap
# Empty runs every case; see the add_case lines of the script for the names.
GVISOR_CASES ?=

.PHONY: gvisor-test
gvisor-test: ## Run `pyexec sandbox --isolation gvisor` inside runsc and check the envelopes
	$(CARGO) build --locked --bin pyexec
	PLATFORM=$(GVISOR_PLATFORM) PYEXEC_BIN=$(CURDIR)/target/debug/pyexec \
	  $(CURDIR)/hack/gvisor/sandbox-in-gvisor.sh $(GVISOR_CASES)
