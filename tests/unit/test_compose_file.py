"""docker-compose-cassandra.yml: the design's container, ports that agree with the code and are
published on loopback only, and the opt-in `pipeline` profile that runs the consumers from the
image against the two services."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecom_pipeline import config, consumer
from tests.unit.conftest import ROOT
from tests.unit.deploy_facts import environment_reads, parse_command

COMPOSE_FILE = ROOT / "docker-compose-cassandra.yml"
STACK_SERVICES = ("cassandra", "pubsub-emulator")
PROFILE = "pipeline"


def stack_attribute(name: str) -> Any:
    """`name` as the local stack's code defines it, wherever in the `stack` package it lives
    (stack/compose.py and stack/common.py today; stack/localstack.py before issue 24)."""
    package = importlib.import_module("stack")
    modules = [package] + [
        importlib.import_module(f"stack.{info.name}") for info in pkgutil.iter_modules(package.__path__)
    ]
    defined = {id(getattr(m, name)): getattr(m, name) for m in modules if hasattr(m, name)}
    assert len(defined) == 1, f"the stack package defines {name} {len(defined)} times"
    return next(iter(defined.values()))


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
def pipeline(compose) -> dict[str, dict[str, Any]]:
    """The services of the opt-in profile."""
    return {name: s for name, s in compose["services"].items() if PROFILE in s.get("profiles", [])}


@pytest.fixture(scope="module")
def default_endpoints():
    """`Endpoints.from_env({})`: where the stack's code expects the services by default."""
    return stack_attribute("Endpoints").from_env({})


def published(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host IP or None, host port, container port) of a service's `ports` (short syntax)."""
    entries = []
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        host_ip = ":".join(parts[:-2]) or None
        entries.append((host_ip, int(parts[-2]), int(parts[-1])))
    return entries


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """{container port: host port} from a service's `ports`."""
    return {container: host for _, host, container in published(service)}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(map(str, command))


def test_the_compose_file_is_where_the_stack_script_looks_for_it():
    """The path the stack's code hands to `docker compose -f`, not a mention of the name."""
    assert Path(stack_attribute("COMPOSE_FILE")).resolve() == COMPOSE_FILE.resolve()
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


def test_every_published_port_is_on_loopback_only(compose):
    """Neither service has a password: published on every interface, anyone on the network could
    write to the table or read the dead letters."""
    for name, service in compose["services"].items():
        for host_ip, host_port, _ in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} on {host_ip or 'every interface'}"


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


# --- the opt-in pipeline profile ----------------------------------------------------------------


def argv(service: dict[str, Any]) -> list[str]:
    """What `python` (the image's ENTRYPOINT) is given."""
    command = service["command"]
    assert isinstance(command, list), "exec form: the ENTRYPOINT gets the arguments as they are"
    return [str(a) for a in command]


def consumers(pipeline) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in pipeline.items() if argv(s)[0] != "-m"}


def test_the_stack_services_start_without_the_profile_and_the_pipeline_only_with_it(compose, pipeline):
    """`STACK=docker make stack` runs `docker compose up` with no profile: the two services."""
    without_profile = sorted(n for n, s in compose["services"].items() if not s.get("profiles"))
    assert without_profile == sorted(STACK_SERVICES)
    assert set(pipeline) == set(compose["services"]) - set(STACK_SERVICES)
    for name, service in pipeline.items():
        assert service["profiles"] == [PROFILE], name


def test_the_profile_runs_the_three_consumers_from_the_image(pipeline):
    scripts = sorted(parse_command(argv(s)).target for s in consumers(pipeline).values())
    assert scripts == ["ingest_in_fact_table.py", "order_data_consumer.py", "replay_dlq_payments.py"]
    for name, service in pipeline.items():
        assert service["build"] == "." and (ROOT / "Dockerfile").is_file(), name
    assert len({s["image"] for s in pipeline.values()}) == 1  # built once, run four times


def test_setup_runs_once_after_both_services_and_every_consumer_waits_for_it_to_succeed(pipeline):
    (setup_name,) = [n for n, s in pipeline.items() if argv(s)[:3] == ["-m", "ecom_pipeline.admin", "setup"]]
    parse_command(argv(pipeline[setup_name]))
    depends = pipeline[setup_name]["depends_on"]
    assert depends["cassandra"]["condition"] == "service_healthy"
    assert "pubsub-emulator" in depends
    assert "restart" not in pipeline[setup_name]  # one-shot
    for name, service in consumers(pipeline).items():
        assert service["depends_on"] == {setup_name: {"condition": "service_completed_successfully"}}, name


def test_the_pipeline_reaches_the_services_by_their_names_inside_the_network(pipeline, emulator, compose):
    project = re.search(r"--project=(\S+)", command_text(emulator))
    assert project is not None
    listen = re.search(r"--host-port=[\d.]+:(\d+)", command_text(emulator))
    assert listen is not None
    for name, service in pipeline.items():
        environment = service["environment"]
        assert environment["PUBSUB_EMULATOR_HOST"] == f"pubsub-emulator:{listen.group(1)}", name
        assert environment["GOOGLE_CLOUD_PROJECT"] == project.group(1), name
        assert environment["CASSANDRA_HOSTS"] == "cassandra", name
        assert int(environment["CASSANDRA_PORT"]) in published_ports(compose["services"]["cassandra"]), name
        assert set(environment) <= set(environment_reads()), f"{name}: a variable the code does not read"
        config.PubSubSettings.from_env(environment)
        config.CassandraSettings.from_env(environment)


def test_the_pipeline_runs_as_the_images_user_read_only_with_no_privileges(pipeline):
    for name, service in pipeline.items():
        assert service["user"] == "10001:10001", name
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"{duration!r}: write it in seconds"
    return float(match.group(1))


def test_a_stopped_consumer_has_the_time_to_settle_what_it_holds(pipeline):
    """Compose's default is 10 s, then SIGKILL: shorter than --stop-grace."""
    for name, service in consumers(pipeline).items():
        stop_grace = parse_command(argv(service)).arguments.stop_grace
        timeout = config.CassandraSettings().request_timeout
        assert seconds(service["stop_grace_period"]) >= stop_grace + timeout + consumer.PULL_TIMEOUT + 10, name


def test_each_consumers_metrics_are_published_where_prometheus_yml_scrapes_them(pipeline):
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = {
        group["labels"]["instance_script"]: group["targets"][0]
        for job in prometheus["scrape_configs"]
        for group in job["static_configs"]
    }
    for name, service in consumers(pipeline).items():
        parsed = parse_command(argv(service))
        port = parsed.arguments.metrics_port
        assert parsed.arguments.metrics_address == "0.0.0.0", name  # reachable from outside the container
        assert targets[parsed.target.removesuffix(".py")] == f"127.0.0.1:{port}", name
        assert ("127.0.0.1", port, port) in published(service), name
