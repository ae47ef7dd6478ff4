"""docker-compose-cassandra.yml: the design's container, and ports that agree with the code."""

from __future__ import annotations

import importlib.util
import re
import sys
from typing import Any

import pytest
import yaml

from tests.unit.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose-cassandra.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def cassandra(compose) -> dict[str, Any]:
    return compose["services"]["cassandra"]


@pytest.fixture(scope="module")
def emulator(compose) -> dict[str, Any]:
    return compose["services"]["pubsub-emulator"]


@pytest.fixture(scope="module")
def default_endpoints():
    """`Endpoints.from_env({})` of stack/localstack.py, a script rather than a package module."""
    spec = importlib.util.spec_from_file_location("localstack_under_test", ROOT / "stack" / "localstack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        return module.Endpoints.from_env({})
    finally:
        del sys.modules[spec.name]


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """{container port: host port} from a service's `ports` (short syntax, optional host IP)."""
    mapping = {}
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        host, container = int(parts[-2]), int(parts[-1])
        mapping[container] = host
    return mapping


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(map(str, command))


def test_the_compose_file_is_where_the_stack_script_looks_for_it():
    assert "docker-compose-cassandra.yml" in (ROOT / "stack" / "localstack.py").read_text()
    assert COMPOSE_FILE.is_file()


def test_cassandra_runs_in_the_designs_container(cassandra):
    assert cassandra["container_name"] == "cassandra-container"


def test_cassandra_is_version_5_0(cassandra):
    assert cassandra["image"].startswith("cassandra:5.0")


def test_cassandra_publishes_the_cql_port(cassandra):
    assert published_ports(cassandra)[9042] == 9042


def test_cassandra_keeps_its_data_in_a_named_volume(compose, cassandra):
    volumes = {str(v).split(":")[1]: str(v).split(":")[0] for v in cassandra["volumes"]}
    assert volumes["/var/lib/cassandra"] in compose["volumes"]


def test_cassandra_has_a_small_heap(cassandra):
    environment = cassandra["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    assert environment["MAX_HEAP_SIZE"] == "1G"
    assert environment["HEAP_NEWSIZE"] == "200M"


def test_cassandra_is_healthy_only_when_it_answers_a_cql_query(cassandra):
    test = cassandra["healthcheck"]["test"]
    command = test if isinstance(test, str) else " ".join(test)
    assert "cqlsh" in command
    assert re.search(r"SELECT\s+\w+\s+FROM\s+system\.local", command)


def test_the_emulator_is_googles_cli_image_with_emulators(emulator):
    image, _, tag = emulator["image"].rpartition(":")
    assert image.endswith("google-cloud-cli")
    assert "emulators" in tag


def test_the_emulator_publishes_its_port(emulator):
    assert published_ports(emulator)[8085] == 8085


def test_the_emulator_listens_on_all_interfaces_of_its_published_port(emulator):
    command = command_text(emulator)
    assert "gcloud beta emulators pubsub start" in command
    host_port = re.search(r"--host-port=([\d.]+):(\d+)", command)
    assert host_port is not None
    assert host_port.group(1) == "0.0.0.0"  # reachable from outside the container
    assert int(host_port.group(2)) in published_ports(emulator)


# --- agreement with the code's defaults ---------------------------------------------------------


def test_the_code_defaults_are_the_ports_and_project_the_compose_file_uses(default_endpoints):
    assert (default_endpoints.cassandra_port, default_endpoints.pubsub_port, default_endpoints.project) == (
        9042,
        8085,
        "ecom-local",
    )


def test_cassandra_is_published_where_the_code_connects(cassandra, default_endpoints):
    assert default_endpoints.cassandra_port in published_ports(cassandra).values()


def test_the_emulator_is_published_where_the_code_connects(emulator, default_endpoints):
    assert default_endpoints.pubsub_port in published_ports(emulator).values()


def test_the_emulator_serves_the_project_the_code_uses(emulator, default_endpoints):
    project = re.search(r"--project=(\S+)", command_text(emulator))
    assert project is not None
    assert project.group(1) == default_endpoints.project


def test_the_makefile_defaults_agree_with_the_compose_file(cassandra, emulator):
    makefile = (ROOT / "Makefile").read_text()
    defaults = dict(re.findall(r"^export (\w+) \?= (\S+)$", makefile, flags=re.MULTILINE))
    assert int(defaults["CASSANDRA_PORT"]) in published_ports(cassandra).values()
    assert int(defaults["PUBSUB_EMULATOR_HOST"].rpartition(":")[2]) in published_ports(emulator).values()
    assert f"--project={defaults['GOOGLE_CLOUD_PROJECT']}" in command_text(emulator)
