# Every target does its own set-up on a fresh Debian machine as root:
# system packages, kernel header links, the venv. See scripts/setup.sh.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stickyip-setup

.PHONY: setup test test-fast lint demo bench bench-ipam bench-webhook bench-scheduler \
        bench-datapath-node bench-datapath bench-scale e2e clean image image-lock image-clean

$(STAMP): pyproject.toml scripts/setup.sh scripts/image/requirements.lock
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check ipam plumbing scheduler webhooks datapath stickyip kubestandin demo netbed tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -x tests/unit

lint: $(STAMP)
	$(PY) -m ruff check ipam plumbing scheduler webhooks datapath stickyip kubestandin demo netbed tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

demo: $(STAMP)
	$(PY) -m demo

bench: bench-ipam bench-webhook bench-scheduler bench-datapath-node bench-datapath bench-scale

bench-ipam: $(STAMP)
	$(PY) -m bench.ipam

bench-webhook: $(STAMP)
	$(PY) -m bench.webhook

bench-scheduler: $(STAMP)
	$(PY) -m bench.scheduler

bench-datapath-node: $(STAMP)
	$(PY) -m bench.node

bench-datapath: $(STAMP)
	$(PY) -m bench.datapath

# The control plane at 5,000 nodes (bench/scale.py runs every group of rows).
bench-scale: $(STAMP)
	$(PY) -m bench.scale

e2e: $(STAMP)
	STICKYIP_E2E=1 $(PY) -m pytest -q tests/e2e

# The OCI image (as root, no container registry): localhost/stickyip:VERSION in
# local containers-storage and build/stickyip-VERSION.oci.tar. See docs/deploy.md.
image: $(STAMP)
	$(PY) scripts/image/build.py

# Re-pin the image's Python dependencies to what the venv runs (after a pyproject change).
image-lock: $(STAMP)
	$(PY) scripts/image/lock.py

image-clean:
	-buildah --storage-driver $${STICKYIP_IMAGE_STORAGE_DRIVER:-vfs} rmi \
	  $$($(PY) scripts/image/build.py --print-ref) 2>/dev/null
	rm -f build/stickyip-*.oci.tar build/stickyip-*.oci.tar.build-key

clean:
	rm -rf $(VENV) bench/results .pytest_cache .mypy_cache .ruff_cache
