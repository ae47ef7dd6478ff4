"""The local stack's pure parts: node addresses, exports, and a cluster node's configuration."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stack.cli import exports
from stack.common import ROOT, Endpoints, is_loopback
from stack.node import cassandra_node, cluster_yaml
from stack.service import LocalService


def test_one_node_by_default_at_the_configured_host():
    endpoints = Endpoints.from_env({})
    assert (endpoints.nodes, endpoints.node_address(1)) == (1, "127.0.0.1")
    assert "export CASSANDRA_HOSTS=127.0.0.1\n" in exports(endpoints)
    assert cassandra_node(1, 1).pid_file.name == "cassandra.pid"


def test_a_three_node_cluster_has_node_k_on_127_0_0_k_and_exports_all_three():
    endpoints = Endpoints.from_env({"CASSANDRA_NODES": "3"})
    assert [endpoints.node_address(k) for k in (1, 2, 3)] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert "export CASSANDRA_HOSTS=127.0.0.1,127.0.0.2,127.0.0.3\n" in exports(endpoints)
    assert [cassandra_node(k, 3).pid_file.name for k in (1, 2, 3)] == [
        "cassandra-1.pid",
        "cassandra-2.pid",
        "cassandra-3.pid",
    ]


def test_a_secured_node_exports_the_pipelines_role_and_ca_but_no_password():
    lines = exports(Endpoints.from_env({"CASSANDRA_SECURE": "1"})).splitlines()
    assert lines[-3:] == [
        "export CASSANDRA_SSL_CA_CERT=.stack/secure/ca.pem",
        "export CASSANDRA_USERNAME=ecom_pipeline",
        'export CASSANDRA_PASSWORD="$(cat .stack/secure/pipeline-password)"',  # read from its file when run
    ]


def test_the_script_runs_from_any_directory_and_shows_its_usage_for_an_unknown_command(tmp_path):
    """`python stack/localstack.py` imports the `stack` package from the checkout, wherever it runs."""
    script = subprocess.run(
        [sys.executable, str(ROOT / "stack" / "localstack.py"), "no-such-command"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 2, script.stderr
    assert "Usage: python stack/localstack.py up|down|status|observe" in script.stderr


@pytest.mark.parametrize("nodes", ["0", "4", "three", "-1"])
def test_a_bad_node_count_is_refused_with_its_name(nodes):
    with pytest.raises(SystemExit, match="CASSANDRA_NODES must be a number of nodes from 1 to 3"):
        Endpoints.from_env({"CASSANDRA_NODES": nodes})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PUBSUB_EMULATOR_HOST", "localhost"),
        ("PUBSUB_EMULATOR_HOST", "127.0.0.1:80x"),
        ("PUBSUB_EMULATOR_HOST", "127.0.0.1:\u0668\u0660\u0668\u0665"),  # digits, but not ASCII ones
        ("CASSANDRA_PORT", "abc"),
        ("CASSANDRA_PORT", "\u0669\u0660\u0664\u0662"),
        ("CASSANDRA_NODES", "\u0663"),
    ],
)
def test_a_mistyped_address_is_refused_with_its_name(name, value):
    with pytest.raises(SystemExit, match=f"{name} must be"):
        Endpoints.from_env({name: value})


def test_a_cluster_node_listens_on_its_own_address_with_periodic_sync():
    yaml = cluster_yaml((ROOT / "stack" / "cassandra.yaml").read_text(), "127.0.0.2")
    assert "listen_address: 127.0.0.2\n" in yaml and "rpc_address: 127.0.0.2\n" in yaml
    assert '- seeds: "127.0.0.1:7000"' in yaml  # node 1 is every node's seed
    assert "commitlog_sync: periodic\n" in yaml and "commitlog_sync: group" not in yaml


@pytest.mark.parametrize(("host", "local"), [("127.0.0.3", True), ("localhost", True), ("10.0.0.3", False)])
def test_the_whole_127_range_is_local(host, local):
    assert is_loopback(host) is local


@pytest.mark.parametrize(
    ("cwd", "new_session", "ours"), [("checkout", True, True), ("elsewhere", True, False), ("checkout", False, False)]
)
def test_a_recorded_pid_is_ours_only_if_it_runs_in_this_checkout_and_leads_its_group(tmp_path, cwd, new_session, ours):
    """Another checkout's node has the same command-line marker: a stale pid file whose pid was
    reused by it must not make `down` stop that node (nor `up` report it as this project's)."""
    marker = "a-marker-of-this-test"
    where = ROOT if cwd == "checkout" else tmp_path
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", marker], cwd=where, start_new_session=new_session
    )
    try:
        # Until the child has exec'd, /proc shows the parent's command line: wait for the marker,
        # or the "ours" case fails on a busy machine for a reason that has nothing to do with it.
        deadline = time.monotonic() + 10
        while marker not in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace"):
            assert time.monotonic() < deadline, "the child never exec'd"
            time.sleep(0.01)
        pid_file = tmp_path / "service.pid"
        pid_file.write_text(f"{process.pid}\n")
        service = LocalService("service", pid_file, tmp_path / "service.log", marker, start_timeout=1)
        assert service.pid() == (process.pid if ours else None)
    finally:
        process.kill()
        process.wait()
