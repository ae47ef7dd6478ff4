# The project's commands. `make demo` and `make test` do all the set-up they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK_PY := $(PY) stack/localstack.py
CASSANDRA_JARS := .stack/cassandra/lib/.resolved

# The local stack, unless the caller points elsewhere (see docs/scaling.md, "Real Pub/Sub and a real
# Cassandra cluster").
export GOOGLE_CLOUD_PROJECT ?= ecom-local
export PUBSUB_EMULATOR_HOST ?= 127.0.0.1:8085
# CASSANDRA_NODES=3: a local three-node cluster, node k on 127.0.0.k (stack/localstack.py).
export CASSANDRA_NODES ?= 1
ifeq ($(CASSANDRA_NODES),3)
export CASSANDRA_HOSTS ?= 127.0.0.1,127.0.0.2,127.0.0.3
endif
export CASSANDRA_HOSTS ?= 127.0.0.1
export CASSANDRA_PORT ?= 9042
# CASSANDRA_SECURE=1: one node with passwords, roles and client TLS required (docs/security.md).
# Set-up runs as the administrator and creates the pipeline's role; the scripts use that role.
export CASSANDRA_SECURE ?= 0
ifeq ($(CASSANDRA_SECURE),1)
export CASSANDRA_SSL_CA_CERT ?= .stack/secure/ca.pem
AS_ADMIN := CASSANDRA_USERNAME=cassandra CASSANDRA_PASSWORD="$$(cat .stack/secure/admin-password)" \
	CASSANDRA_PIPELINE_ROLE=ecom_pipeline CASSANDRA_PIPELINE_PASSWORD="$$(cat .stack/secure/pipeline-password)"
endif
export CASSANDRA_KEYSPACE ?= ecom_store
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv jars stack stack-down stack-status setup demo lint deploy-check monitoring-check observe test test-cluster test-secure test-unit bench audit clean

help:
	@echo "make demo     bring the stack up, set it up, run the whole pipeline once and summarise"
	@echo "make test     bring the stack up and run every test (unit + integration)"
	@echo "make test-cluster   the fault tests on a local three-node cluster (make stack-down first)"
	@echo "make test-secure    the security tests on a node with passwords, roles and TLS (make stack-down first)"
	@echo "make lint     ruff, mypy, promtool, detect-secrets, hadolint, kubernetes-validate, links; seconds, no services"
	@echo "make observe  Prometheus on 127.0.0.1:9090 scraping the scripts (monitoring/)"
	@echo "make stack | stack-down | stack-status | setup | audit | bench | test-unit | clean"

# The virtualenv, reinstalled whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# Apache Cassandra's jars from Maven Central (no binary distribution is published there for 5.0).
$(CASSANDRA_JARS): stack/pom.xml
	@command -v java >/dev/null || { echo "JDK 17 is needed (java not found)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed (mvn not found)"; exit 1; }
	rm -rf .stack/cassandra/lib
	mvn -B -q -f stack/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.stack/cassandra/lib
	touch $@

jars: $(CASSANDRA_JARS)

stack: venv
ifneq ($(STACK),docker)
stack: jars
endif
stack:
	$(STACK_PY) up

stack-down: venv
	$(STACK_PY) down

stack-status: venv
	$(STACK_PY) status

setup: stack
	$(AS_ADMIN) $(PY) -m ecom_pipeline.admin setup

demo: setup
	bash scripts/demo.sh

audit: venv
	$(PY) -m ecom_pipeline.admin audit $(AUDIT_ARGS)

# Lint first, before any service starts: a newcomer's change is checked as the maintainers' are.
lint: venv monitoring-check deploy-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	git ls-files -z | xargs -0 $(VENV)/bin/detect-secrets-hook
	$(PY) scripts/check_links.py

# The container image's recipe and the Kubernetes manifests, checked offline (no Docker engine,
# no cluster): hadolint on the Dockerfile, and kubernetes-validate on every built-in resource in
# strict mode (an unknown field fails) against the oldest Kubernetes with every field the
# manifests use (1.31: PodDisruptionBudget's unhealthyPodEvictionPolicy is GA there) and the
# newest the pinned tool knows. The custom resources (Managed Service for Prometheus, KEDA) have
# no schema here: tests/unit/test_kubernetes_manifests.py checks the fields the project relies on.
# A kind with no schema is only a WARN to kubernetes-validate; here it fails.
KUBERNETES_VERSIONS := 1.31.0 1.37.0
KUBERNETES_CUSTOM_RESOURCES := deploy/kubernetes/base/podmonitoring.yaml deploy/kubernetes/overlays/keda/keda.yaml
KUBERNETES_MANIFESTS := $(filter-out %/kustomization.yaml $(KUBERNETES_CUSTOM_RESOURCES),\
	$(sort $(wildcard deploy/kubernetes/*/*.yaml deploy/kubernetes/*/*/*.yaml)))
deploy-check: venv
	$(VENV)/bin/hadolint Dockerfile
	set -o pipefail; $(VENV)/bin/kubernetes-validate --strict --quiet $(addprefix -k ,$(KUBERNETES_VERSIONS)) \
		$(KUBERNETES_MANIFESTS) | awk '{ print } /^WARN/ { unknown = 1 } END { exit unknown }'

# The Prometheus config and alert rules, with promtool's unit tests of every alert.
monitoring-check:
	@command -v promtool >/dev/null || { echo "promtool is needed: apt-get install prometheus (.ci/run does)"; exit 1; }
	promtool check config monitoring/prometheus.yml
	promtool check rules monitoring/alerts.yml
	promtool test rules monitoring/alerts_test.yml

# Prometheus on 127.0.0.1:9090 scraping the scripts (monitoring/prometheus.yml); make stack-down stops it.
observe: venv
	$(STACK_PY) observe

test-unit: venv
	$(PY) -m pytest tests/unit -q

test: lint
	$(MAKE) setup
	$(PY) -m pytest tests/unit tests/integration -q -ra

# The fault tests on a local three-node cluster (replication 3); `make stack-down` first if a
# single node runs. .ci/run runs it after make test.
CLUSTER := CASSANDRA_NODES=3 CASSANDRA_HOSTS=127.0.0.1,127.0.0.2,127.0.0.3 CASSANDRA_REPLICATION_FACTOR=3
test-cluster: lint
	$(CLUSTER) $(MAKE) setup
	$(CLUSTER) $(PY) -m pytest tests/cluster -q -ra

# The security tests on one secured node (`make stack-down` first); .ci/run runs them too.
test-secure: lint
	CASSANDRA_SECURE=1 $(MAKE) setup
	CASSANDRA_SECURE=1 $(PY) -m pytest tests/secure -q -ra

bench: setup
	$(PY) -m bench.run $(BENCH_ARGS)

clean: stack-down
	rm -rf .stack $(VENV)
