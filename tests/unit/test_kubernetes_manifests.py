"""deploy/kubernetes/, held to the code it runs (no cluster needed).

`make lint` validates every built-in resource against the Kubernetes API's schemas
(kubernetes-validate, strict). These tests check what no schema knows: that the manifests agree
with the code: every variable the code reads is set or may stay unset, the probes are the paths
the scripts serve, each command is one its script's parser accepts, the grace period outlasts
a stop, the autoscalers watch the subscription each consumer reads, no secret value is written
down, and the custom resources (KEDA, Managed Service for Prometheus) carry the fields the
project relies on.
"""

from __future__ import annotations

import functools
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]  # ships no types

from ecom_pipeline import config, consumer, http_server, probes
from tests.unit.conftest import ROOT
from tests.unit.deploy_facts import environment_reads, parse_command
from tests.unit.test_dockerfile import final_stage, only

KUBERNETES = ROOT / "deploy" / "kubernetes"
MAKEFILE = ROOT / "Makefile"
NUM_UNDELIVERED = "pubsub.googleapis.com|subscription|num_undelivered_messages"
WORKLOAD_KINDS = ("Deployment", "Job")
# Variables the code reads that a pod leaves unset on purpose, and why; each is in the README or docs/.
LEFT_UNSET = {
    "PUBSUB_EMULATOR_HOST": "unset: the real Pub/Sub, with the pod's workload identity",
    "CASSANDRA_SSL_CERT": "mutual TLS is optional",
    "CASSANDRA_SSL_KEY": "mutual TLS is optional",
    "PROMETHEUS_MULTIPROC_DIR": "one process per pod; --workers sets it itself",
}
SECRET_LOOKING = re.compile(r"(^|_)(PASSWORD|SECRET|TOKEN|KEY|CREDENTIALS?)(_|$)", re.IGNORECASE)


# --- loading ----------------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache  # read once: no test changes what it returns
def documents() -> list[tuple[Path, dict[str, Any]]]:
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in manifest_files():
        found.extend((path, document) for document in yaml.safe_load_all(path.read_text()) if document)
    return found


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


def resource(kind: str, name: str) -> dict[str, Any]:
    found = resources(kind)
    assert name in found, f"no {kind} {name}: {sorted(found)}"
    return found[name]


def workloads() -> dict[str, dict[str, Any]]:
    """Every Deployment and Job, by name."""
    return {name: d for kind in WORKLOAD_KINDS for name, d in resources(kind).items()}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def consumers() -> dict[str, dict[str, Any]]:
    """The Deployments: each runs one consumer script."""
    return resources("Deployment")


def command(container: dict[str, Any]) -> list[str]:
    """What `python` is given in the container: the image's ENTRYPOINT is `python`."""
    assert container.get("command") in (None, ["python"]), "the image's ENTRYPOINT (python) runs the script"
    return [str(a) for a in container["args"]]


def parsed(container: dict[str, Any]):
    return parse_command(command(container)).arguments


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions In / NotIn / Exists) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def config_map() -> dict[str, str]:
    (only_one,) = resources("ConfigMap").values()
    return {k: str(v) for k, v in only_one["data"].items()}


def environment_of(container: dict[str, Any]) -> dict[str, dict[str, Any] | str]:
    """{variable: value or valueFrom} as the container sees it: envFrom first, env over it."""
    seen: dict[str, dict[str, Any] | str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        seen.update(resource("ConfigMap", name)["data"])
    for item in container.get("env", []):
        seen[item["name"]] = item["valueFrom"] if "valueFrom" in item else str(item["value"])
    return seen


def makefile_variable(name: str) -> list[str]:
    text = MAKEFILE.read_text().replace("\\\n", " ")
    match = re.search(rf"^{name} :?= (.*)$", text, flags=re.MULTILINE)
    assert match, f"{name} is not set in the Makefile"
    return match.group(1).split()


def every_container() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, workload in workloads().items():
        for container in containers(workload):
            yield name, workload, container


# --- the kustomizations -----------------------------------------------------------------------------


def kustomizations() -> list[Path]:
    return sorted(KUBERNETES.rglob("kustomization.yaml"))


def test_each_kustomization_lists_exactly_the_files_beside_it():
    assert kustomizations(), "no kustomization"
    for path in kustomizations():
        listed = yaml.safe_load(path.read_text())["resources"]
        files = {entry for entry in listed if entry.endswith(".yaml")}
        beside = {p.name for p in path.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert files == beside, path
        for directory in set(listed) - files:
            assert (path.parent / directory / "kustomization.yaml").is_file(), f"{path}: {directory}"


def test_the_kustomizations_patch_nothing_so_the_files_validated_are_the_files_applied():
    for path in kustomizations():
        keys = set(yaml.safe_load(path.read_text()))
        assert keys <= {"apiVersion", "kind", "resources", "images"}, f"{path}: {keys}"


def test_each_overlay_is_the_base_plus_an_autoscaler():
    overlays = sorted((KUBERNETES / "overlays").iterdir())
    assert [o.name for o in overlays] == ["hpa", "keda"]
    for overlay in overlays:
        assert "../../base" in yaml.safe_load((overlay / "kustomization.yaml").read_text())["resources"]


def test_every_container_runs_the_image_kustomize_names():
    images = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())["images"]
    (image,) = images
    assert image["newTag"] and image["newName"]
    for name, _, container in every_container():
        assert container["image"] == image["name"], name


def test_every_namespaced_resource_is_in_the_namespace_the_manifests_create():
    (namespace,) = resources("Namespace")
    for path, document in documents():
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == namespace, f"{path}: {document['metadata']['name']}"


def test_the_namespace_enforces_the_restricted_pod_security_standard():
    (namespace,) = resources("Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- built-in and custom resources: what make lint validates, and what is left to this file ----------


def is_builtin(document: dict[str, Any], version: str) -> bool:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    return True  # a ValidationError is raised, and fails the test, for a built-in that is wrong


def test_every_built_in_resource_is_valid_and_the_custom_ones_are_exactly_the_files_make_lint_skips():
    versions = makefile_variable("KUBERNETES_VERSIONS")
    custom_files = {ROOT / p for p in makefile_variable("KUBERNETES_CUSTOM_RESOURCES")}
    assert versions and custom_files
    for version in versions:
        files_with_custom = set()
        for path, document in documents():
            if is_builtin(document, version):
                assert path not in custom_files, f"{path} holds the built-in {document['kind']}: make lint skips it"
            else:
                files_with_custom.add(path)
        assert files_with_custom == custom_files


def test_the_custom_resources_are_the_kinds_of_keda_and_managed_prometheus():
    kinds = {(d["apiVersion"], d["kind"]) for path, d in documents() if not is_builtin(d, "1.31.0")}
    assert kinds == {
        ("monitoring.googleapis.com/v1", "PodMonitoring"),
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
    }


# --- the environment --------------------------------------------------------------------------------


def test_the_scan_of_the_code_finds_the_variables_it_is_known_to_read():
    """So that a scan that finds nothing cannot make the tests below pass."""
    reads = environment_reads()
    assert {"GOOGLE_CLOUD_PROJECT", "CASSANDRA_HOSTS", "CASSANDRA_PASSWORD", "METRICS_PORT"} <= set(reads)
    assert "PATH_INFO" not in reads  # the WSGI request's environ, not the process's


def required_by(parsed_target: str) -> set[str]:
    """What a container running this script or module reads: everything the shipped code
    reads, except what only the admin package reads (set-up) when it is not admin."""
    reads = environment_reads()
    if parsed_target == "ecom_pipeline.admin":
        return set(reads)
    return {name for name, files in reads.items() if not all(f.startswith("ecom_pipeline/admin/") for f in files)}


@pytest.mark.parametrize("name", sorted(workloads()))
def test_every_variable_the_code_reads_is_set_or_left_unset_on_purpose(name):
    for container in containers(workloads()[name]):
        target = parse_command(command(container)).target
        missing = required_by(target) - set(environment_of(container)) - set(LEFT_UNSET)
        assert missing == set(), f"{name}: {sorted(missing)}"


def test_every_variable_the_manifests_set_is_one_the_code_reads():
    """A misspelt variable (CASSANDRA_HOST) would be set and silently ignored."""
    reads = set(environment_reads())
    for name, _, container in every_container():
        assert set(environment_of(container)) - reads == set(), name


def test_what_a_pod_leaves_unset_is_read_by_the_code_and_explained_in_the_docs():
    reads = set(environment_reads())
    # The configuration table is in the README; the TLS variables are in docs/security.md.
    docs = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    for variable in LEFT_UNSET:
        assert variable in reads, f"{variable} is no longer read: drop it from LEFT_UNSET"
        assert f"`{variable}`" in docs, f"{variable}: the README or docs/ should say what unset means"


def test_no_pod_talks_to_the_emulator():
    for name, _, container in every_container():
        assert "PUBSUB_EMULATOR_HOST" not in environment_of(container), name


def test_the_config_map_is_valid_for_the_code():
    """The values themselves: the settings the scripts would build from them (the CA file
    exists only in the pod, so TLS is checked apart)."""
    values = config_map()
    without_tls = {k: v for k, v in values.items() if not k.startswith("CASSANDRA_SSL_")}
    cassandra = config.CassandraSettings.from_env(without_tls)
    config.PubSubSettings.from_env(values)
    assert cassandra.hosts and cassandra.local_dc
    assert values["CASSANDRA_SSL_CHECK_HOSTNAME"] == "true"


def test_the_ca_certificate_is_a_file_of_the_mounted_tls_secret():
    ca = Path(config_map()["CASSANDRA_SSL_CA_CERT"])
    for name, workload, container in every_container():
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        mounted = [m for m in container["volumeMounts"] if ca.is_relative_to(m["mountPath"])]
        assert len(mounted) == 1, f"{name}: {ca} is in no mounted volume"
        assert "secret" in volumes[mounted[0]["name"]], f"{name}: the CA comes from a Secret"
        assert mounted[0].get("readOnly") is True


def test_no_service_links_set_variables_in_the_pipelines_pods():
    """A Service named `cassandra` would otherwise set CASSANDRA_PORT=tcp://..."""
    for name, workload in workloads().items():
        assert pod_spec(workload)["enableServiceLinks"] is False, name


# --- secrets ----------------------------------------------------------------------------------------


def test_no_manifest_holds_a_secret_value():
    for path, document in documents():
        if document["kind"] == "Secret":
            assert not document.get("data") and not document.get("stringData"), path
        if document["kind"] == "ConfigMap":
            assert not [k for k in document["data"] if SECRET_LOOKING.search(k)], path
    for name, _, container in every_container():
        for item in container.get("env", []):
            if SECRET_LOOKING.search(item["name"]):
                assert "value" not in item, f"{name}: {item['name']} has a value"
                assert "secretKeyRef" in item["valueFrom"], f"{name}: {item['name']} is not from a Secret"


def test_the_consumers_password_is_the_one_setup_gives_their_role():
    (setup,) = resources("Job").values()
    (setup_container,) = containers(setup)
    setup_env = environment_of(setup_container)
    for name, deployment in consumers().items():
        (container,) = containers(deployment)
        seen = environment_of(container)
        assert seen["CASSANDRA_PASSWORD"] == setup_env["CASSANDRA_PIPELINE_PASSWORD"], name
        assert setup_env["CASSANDRA_PIPELINE_ROLE"] == {
            "configMapKeyRef": {"name": "ecom-pipeline-config", "key": "CASSANDRA_USERNAME"}
        }
        assert seen["CASSANDRA_USERNAME"] == config_map()["CASSANDRA_USERNAME"]
    assert setup_env["CASSANDRA_PASSWORD"] != setup_env["CASSANDRA_PIPELINE_PASSWORD"]  # the administrator's


# --- security context and resources -----------------------------------------------------------------


def image_uid() -> int:
    return int(only(final_stage(), "USER")[-1].split(":")[0])


@pytest.mark.parametrize("name", sorted(workloads()))
def test_every_container_runs_as_the_images_user_read_only_and_without_privileges(name):
    workload = workloads()[name]
    pod = pod_spec(workload).get("securityContext", {})
    for container in containers(workload):
        effective = {**pod, **container.get("securityContext", {})}
        assert effective["runAsNonRoot"] is True
        assert effective["runAsUser"] == image_uid()
        assert effective["readOnlyRootFilesystem"] is True
        assert effective["allowPrivilegeEscalation"] is False
        assert effective["capabilities"]["drop"] == ["ALL"]
        assert "add" not in effective["capabilities"]
        assert effective["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("name", sorted(workloads()))
def test_every_container_can_write_tmp_and_only_tmp(name):
    workload = workloads()[name]
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    for container in containers(workload):
        writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
        assert [m["mountPath"] for m in writable] == ["/tmp"]
        assert "emptyDir" in volumes[writable[0]["name"]]


@pytest.mark.parametrize("name", sorted(workloads()))
def test_every_container_requests_and_limits_its_cpu_and_memory(name):
    for container in containers(workloads()[name]):
        resources_ = container["resources"]
        assert set(resources_["requests"]) == {"cpu", "memory"} == set(resources_["limits"])
        # Memory requested is memory limited: a pod is never killed for memory it was promised.
        assert resources_["requests"]["memory"] == resources_["limits"]["memory"]


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]  # fails the test if not
    return int(number) * (1024 if unit == "Gi" else 1)


def test_the_consumers_memory_limit_leaves_room_above_the_measured_peak():
    """docs/benchmarks.md: peak RSS 135 MiB (orders), 134 MiB (payments), one process."""
    for name, deployment in consumers().items():
        (container,) = containers(deployment)
        assert mebibytes(container["resources"]["limits"]["memory"]) >= 1.5 * 135, name


# --- the commands, probes and ports -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(consumers()))
def test_each_consumer_runs_one_process_logging_json_with_its_metrics_on_every_pod_address(name):
    (container,) = containers(consumers()[name])
    arguments = parsed(container)
    assert arguments.log_format == "json"
    assert arguments.workers == 1  # Kubernetes adds pods; a parent's /healthz does not see a hung worker
    assert arguments.metrics_address == "0.0.0.0"
    assert arguments.exit_after_idle is None  # a Deployment's pod runs until stopped


def test_the_three_consumer_scripts_each_run_in_one_deployment():
    scripts = sorted(parse_command(command(containers(d)[0])).target for d in consumers().values())
    assert scripts == ["ingest_in_fact_table.py", "order_data_consumer.py", "replay_dlq_payments.py"]


def test_the_setup_job_runs_admin_setup_once_with_json_logs():
    (job,) = resources("Job").values()
    (container,) = containers(job)
    result = parse_command(command(container))
    assert (result.target, result.arguments.command, result.arguments.log_format) == (
        "ecom_pipeline.admin",
        "setup",
        "json",
    )
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # so that the next apply can create it again


def metrics_port_of(container: dict[str, Any]) -> int:
    """The port the script serves on: --metrics-port, else METRICS_PORT as it reaches the container."""
    flag = parsed(container).metrics_port
    if flag is not None:
        return int(flag)
    value = environment_of(container).get("METRICS_PORT")
    assert isinstance(value, str), "METRICS_PORT: a value, or the script serves no probes"
    return int(value)


@pytest.mark.parametrize("name", sorted(consumers()))
def test_the_port_named_metrics_is_the_one_the_script_serves(name):
    (container,) = containers(consumers()[name])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == metrics_port_of(container)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("name", sorted(consumers()))
def test_the_probes_ask_the_paths_the_script_serves_and_fail_when_it_is_stuck_or_not_ready(name):
    """The real endpoint (http_server.serve, on loopback): the liveness path answers 503 once the
    loop has made no round in its window, the readiness path 503 until both services answered.
    Any other path serves /metrics with 200, so a misspelt probe path would never fail."""
    (container,) = containers(consumers()[name])
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert liveness["port"] == readiness["port"] == "metrics"
    health = probes.Health(liveness_window=60.0)
    port = free_port()
    stop = http_server.serve("127.0.0.1", port, health)
    try:
        assert (status(port, liveness["path"]), status(port, readiness["path"])) == (200, 503)
        health.set_ready(pubsub=True, cassandra=True)
        assert status(port, readiness["path"]) == 200
        health.round(at=0.0)  # the last round, long ago: stuck
        assert status(port, liveness["path"]) == 503
    finally:
        stop()


def test_the_grace_period_outlasts_a_stop():
    """A stop settles what is held for --stop-grace, then waits for a write under way (up to
    CASSANDRA_REQUEST_TIMEOUT) and a pull under way (PULL_TIMEOUT), hands the rest back and
    closes: Kubernetes must not SIGKILL it before that, with 10 s to spare."""
    request_timeout = config.CassandraSettings.from_env(
        {"CASSANDRA_REQUEST_TIMEOUT": config_map().get("CASSANDRA_REQUEST_TIMEOUT", "10")}
    ).request_timeout
    for name, deployment in consumers().items():
        (container,) = containers(deployment)
        stop_grace = parsed(container).stop_grace
        assert stop_grace == config.ConsumerSettings.stop_grace or "--stop-grace" in command(container)
        needed = stop_grace + request_timeout + consumer.PULL_TIMEOUT + 10
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= needed, name


def test_the_pods_use_an_annotated_workload_identity():
    accounts = resources("ServiceAccount")
    account_id = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"  # a Google service account's, and a project's
    for name, workload in workloads().items():
        account = accounts[pod_spec(workload)["serviceAccountName"]]
        email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert re.fullmatch(rf"{account_id}@{account_id}\.iam\.gserviceaccount\.com", email), name
    (setup,) = resources("Job").values()
    deployments = {pod_spec(d)["serviceAccountName"] for d in consumers().values()}
    assert pod_spec(setup)["serviceAccountName"] not in deployments  # only set-up may create topics


# --- autoscaling and disruptions ------------------------------------------------------------------


def autoscaled() -> dict[str, dict[str, Any]]:
    """The order and payment consumers: the Deployments without a fixed replica count."""
    return {name: d for name, d in consumers().items() if "replicas" not in d["spec"]}


def held_per_pod(container: dict[str, Any]) -> int:
    """The most messages a consumer keeps leased: its batches in flight and two pulled ahead."""
    arguments = parsed(container)
    return (arguments.batches_in_flight + 2) * arguments.batch_size


def test_the_order_and_payment_consumers_are_autoscaled_and_the_replay_is_not():
    assert sorted(autoscaled()) == ["order-consumer", "payment-consumer"]
    assert resource("Deployment", "payment-replay")["spec"]["replicas"] == 1


@pytest.mark.parametrize("name", ["order-consumer", "payment-consumer"])
def test_the_autoscaler_watches_the_backlog_of_the_subscription_its_deployment_reads(name):
    deployment = consumers()[name]
    (container,) = containers(deployment)
    hpa = resource("HorizontalPodAutoscaler", name)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    (metric,) = hpa["metrics"]
    external = metric["external"]
    assert metric["type"] == "External" and external["metric"]["name"] == NUM_UNDELIVERED
    selector = external["metric"]["selector"]["matchLabels"]
    assert selector == {"resource.labels.subscription_id": parsed(container).subscription}
    assert external["target"]["type"] == "AverageValue"
    # A pod that keeps up holds this many leased, which Pub/Sub counts as undelivered: the target
    # must be well above it, or a pod that keeps up would add pods by itself.
    assert int(external["target"]["averageValue"]) >= 5 * held_per_pod(container)
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]


@pytest.mark.parametrize("name", ["order-consumer", "payment-consumer"])
def test_the_keda_alternative_scales_the_same_deployment_on_the_same_backlog_the_same_way(name):
    (container,) = containers(consumers()[name])
    hpa = resource("HorizontalPodAutoscaler", name)["spec"]
    scaled = resource("ScaledObject", name)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == name
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (hpa["minReplicas"], hpa["maxReplicas"])
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "gcp-pubsub"
    assert trigger["metadata"]["subscriptionName"] == parsed(container).subscription
    assert trigger["metadata"]["mode"] == "SubscriptionSize"
    assert trigger["metadata"]["value"] == hpa["metrics"][0]["external"]["target"]["averageValue"]
    authentication = resource("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert authentication["spec"]["podIdentity"]["provider"] == "gcp"


def test_the_two_autoscalers_are_in_different_overlays():
    """Never both: each ScaledObject makes an autoscaler of its own for the same Deployment."""
    autoscalers = ("HorizontalPodAutoscaler", "ScaledObject")
    files = {d["kind"]: path.parent.name for path, d in documents() if d["kind"] in autoscalers}
    assert files == {"HorizontalPodAutoscaler": "hpa", "ScaledObject": "keda"}


@pytest.mark.parametrize("name", ["order-consumer", "payment-consumer"])
def test_each_autoscaled_consumer_has_a_budget_that_never_blocks_a_drain(name):
    budget = resource("PodDisruptionBudget", name)["spec"]
    assert matches(budget["selector"], pod_labels(consumers()[name]))
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    others = [n for n, w in workloads().items() if n != name and matches(budget["selector"], pod_labels(w))]
    assert others == []


# --- monitoring and network -------------------------------------------------------------------------


def test_managed_prometheus_scrapes_the_metrics_port_of_every_consumer_and_nothing_else():
    (monitoring,) = resources("PodMonitoring").values()
    assert monitoring["apiVersion"] == "monitoring.googleapis.com/v1"
    spec = monitoring["spec"]
    selected = sorted(n for n, w in workloads().items() if matches(spec["selector"], pod_labels(w)))
    assert selected == sorted(consumers())  # not the Job: it serves no metrics
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    for name in selected:
        (container,) = containers(workloads()[name])
        assert "metrics" in {p["name"] for p in container["ports"]}, name


def test_the_scraped_series_carry_the_labels_the_alerts_use():
    """monitoring/alerts.yml: `up{job="ecom-pipeline"}` and `instance_script`. Managed
    Prometheus names the job after the PodMonitoring."""
    (monitoring,) = resources("PodMonitoring").values()
    alerts = (ROOT / "monitoring" / "alerts.yml").read_text()
    job = re.search(r'up\{job="([^"]+)"\}', alerts)
    assert job is not None and monitoring["metadata"]["name"] == job.group(1)
    (mapping,) = monitoring["spec"]["targetLabels"]["fromPod"]
    assert mapping["to"] == "instance_script" and "instance_script" in alerts
    for name, deployment in consumers().items():
        (container,) = containers(deployment)
        script = parse_command(command(container)).target.removesuffix(".py")
        assert pod_labels(deployment)[mapping["from"]] == script, name


def network_policy() -> dict[str, Any]:
    (policy,) = resources("NetworkPolicy").values()
    return policy["spec"]


def test_the_network_policy_covers_every_pipeline_pod_both_ways():
    spec = network_policy()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    for name, workload in workloads().items():
        assert matches(spec["podSelector"], pod_labels(workload)), name


def test_ingress_is_the_metrics_port_only():
    (rule,) = network_policy()["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]


def test_egress_is_cassandra_google_apis_dns_and_the_metadata_server_only():
    allowed = set()
    for rule in network_policy()["egress"]:
        destinations = tuple(sorted(peer["ipBlock"]["cidr"] for peer in rule.get("to", [])))
        for port in rule["ports"]:
            allowed.add((port["protocol"], port["port"], destinations))
    cassandra_port = int(config_map()["CASSANDRA_PORT"])
    assert allowed == {
        ("TCP", cassandra_port, ()),
        ("TCP", 443, ()),
        ("UDP", 53, ()),
        ("TCP", 53, ()),
        ("TCP", 80, ("169.254.169.254/32",)),
        ("TCP", 988, ("169.254.169.252/32",)),
    }
