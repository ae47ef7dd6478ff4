"""Typed settings from the environment: defaults, parsing, validation, and a password never shown."""

from __future__ import annotations

import pytest

from ecom_pipeline.config import (
    ORDERS_DLQ_TOPIC,
    ORDERS_TOPIC,
    PAYMENTS_DLQ_TOPIC,
    PAYMENTS_TOPIC,
    CassandraSettings,
    PubSubSettings,
    TlsSettings,
    subscription_for,
)

PASSWORD = "s3cr3t-Pa55w0rd-7f2c"  # pragma: allowlist secret  (a made-up password the tests look for)


def test_the_design_topic_names():
    assert (ORDERS_TOPIC, PAYMENTS_TOPIC, PAYMENTS_DLQ_TOPIC, ORDERS_DLQ_TOPIC) == (
        "orders_data",
        "payments_data",
        "dlq_payments_data",
        "dlq_orders_data",
    )


def test_subscription_names_are_topic_dash_sub():
    assert subscription_for("orders_data") == "orders_data-sub"


# --- CassandraSettings --------------------------------------------------------------------------


def test_cassandra_defaults_point_at_the_local_node():
    settings = CassandraSettings.from_env({})
    assert settings.hosts == ("127.0.0.1",)
    assert settings.port == 9042
    assert settings.keyspace == "ecom_store"
    assert settings.username is None
    assert settings.password is None
    assert settings.consistency == "LOCAL_QUORUM"
    assert settings.local_dc is None
    assert settings.request_timeout == 10.0


def test_cassandra_hosts_are_a_comma_separated_list_with_blanks_dropped():
    settings = CassandraSettings.from_env({"CASSANDRA_HOSTS": " 10.0.0.1, 10.0.0.2 ,,node-3 "})
    assert settings.hosts == ("10.0.0.1", "10.0.0.2", "node-3")


def test_an_empty_host_list_falls_back_to_localhost():
    assert CassandraSettings.from_env({"CASSANDRA_HOSTS": " , "}).hosts == ("127.0.0.1",)


def test_cassandra_settings_parse_every_variable():
    settings = CassandraSettings.from_env(
        {
            "CASSANDRA_PORT": "19042",
            "CASSANDRA_KEYSPACE": "ecom_test_1",
            "CASSANDRA_USERNAME": "pipeline",
            "CASSANDRA_PASSWORD": PASSWORD,
            "CASSANDRA_CONSISTENCY": "local_one",
            "CASSANDRA_LOCAL_DC": "dc1",
            "CASSANDRA_REQUEST_TIMEOUT": "2.5",
        }
    )
    assert settings.port == 19042
    assert settings.keyspace == "ecom_test_1"
    assert settings.username == "pipeline"
    assert settings.password is not None and settings.password.get_secret_value() == PASSWORD
    assert settings.consistency == "LOCAL_ONE"
    assert settings.local_dc == "dc1"
    assert settings.request_timeout == 2.5


@pytest.mark.parametrize("consistency", ["quorum", "Quorum", "QUORUM"])
def test_consistency_is_upper_cased(consistency):
    assert CassandraSettings.from_env({"CASSANDRA_CONSISTENCY": consistency}).consistency == "QUORUM"


def test_an_unknown_consistency_level_is_rejected():
    with pytest.raises(ValueError, match="CASSANDRA_CONSISTENCY"):
        CassandraSettings.from_env({"CASSANDRA_CONSISTENCY": "SOMETIMES"})


@pytest.mark.parametrize(
    "keyspace",
    ["", "1ecom", "ecom-store", "ecom store", "ecom_store; DROP KEYSPACE x", "k" * 49, '"ecom"'],
)
def test_an_invalid_keyspace_name_is_rejected(keyspace):
    with pytest.raises(ValueError, match="keyspace"):
        CassandraSettings.from_env({"CASSANDRA_KEYSPACE": keyspace})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CASSANDRA_PORT", "ninety", "CASSANDRA_PORT must be an integer from 1 to 65535, not 'ninety'"),
        ("CASSANDRA_PORT", "0", "CASSANDRA_PORT must be an integer from 1 to 65535, not '0'"),
        ("CASSANDRA_PORT", "70000", "CASSANDRA_PORT must be an integer from 1 to 65535, not '70000'"),
        ("CASSANDRA_PORT", "9042.5", "CASSANDRA_PORT must be an integer from 1 to 65535, not '9042.5'"),
        (
            "CASSANDRA_REQUEST_TIMEOUT",
            "soon",
            "CASSANDRA_REQUEST_TIMEOUT must be a number from 0.1 to 3600, not 'soon'",
        ),
        ("CASSANDRA_REQUEST_TIMEOUT", "nan", "CASSANDRA_REQUEST_TIMEOUT must be a number from 0.1 to 3600, not 'nan'"),
        ("CASSANDRA_REQUEST_TIMEOUT", "0", "CASSANDRA_REQUEST_TIMEOUT must be a number from 0.1 to 3600, not '0'"),
    ],
)
def test_a_bad_number_names_its_variable(name, value, message):
    with pytest.raises(ValueError) as error:
        CassandraSettings.from_env({name: value})
    assert str(error.value) == message


def test_an_empty_password_means_no_password():
    assert CassandraSettings.from_env({"CASSANDRA_PASSWORD": ""}).password is None


def test_printing_the_settings_never_shows_the_password():
    settings = CassandraSettings.from_env({"CASSANDRA_USERNAME": "pipeline", "CASSANDRA_PASSWORD": PASSWORD})
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert PASSWORD not in f"{settings}"
    assert "pipeline" in repr(settings)  # the rest is still readable


@pytest.mark.parametrize(
    "hosts", ["::1", "cassandra-0.cassandra.db.svc.cluster.local", "cassandra_1", "10.0.0.1,fe80::1"]
)
def test_host_names_and_addresses_are_hosts(hosts):
    assert CassandraSettings.from_env({"CASSANDRA_HOSTS": hosts}).hosts == tuple(hosts.split(","))


@pytest.mark.parametrize("host", ["127.0.0.1:9042", "node-1:9042", "a..b", "bad host", "http://node-1", "node-1/"])
def test_a_host_with_a_port_or_not_a_name_names_the_variable(host):
    with pytest.raises(ValueError, match=rf"CASSANDRA_HOSTS must be host names or addresses .*, not '{host}'"):
        CassandraSettings.from_env({"CASSANDRA_HOSTS": f"10.0.0.1,{host}"})


# --- PubSubSettings -----------------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"GOOGLE_CLOUD_PROJECT": ""}, {"GOOGLE_CLOUD_PROJECT": "   "}])
def test_a_missing_project_is_rejected(environ):
    with pytest.raises(ValueError, match="GOOGLE_CLOUD_PROJECT"):
        PubSubSettings.from_env(environ)


def test_pubsub_settings_read_project_and_emulator():
    settings = PubSubSettings.from_env({"GOOGLE_CLOUD_PROJECT": "ecom-local", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})
    assert settings.project == "ecom-local"
    assert settings.emulator_host == "127.0.0.1:8085"


def test_without_an_emulator_host_the_real_service_is_used():
    assert PubSubSettings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": ""}).emulator_host is None


@pytest.mark.parametrize(
    ("text", "host"),
    [("localhost:8085", "localhost:8085"), (" 127.0.0.1:8085 ", "127.0.0.1:8085"), ("[::1]:8085", "[::1]:8085")],
)
def test_an_emulator_host_is_host_and_port(text, host):
    assert PubSubSettings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": text}).emulator_host == host


@pytest.mark.parametrize(
    "text",
    ["localhost", "http://127.0.0.1:8085", "127.0.0.1:8085/", "127.0.0.1:99999", "127.0.0.1:0", ":8085", "a b:1"],
)
def test_a_mistyped_emulator_host_names_the_variable(text):
    """Otherwise the client waits for ever: port 443 without a port, a failed name lookup with a
    scheme, 99999 taken as 34463."""
    with pytest.raises(ValueError, match=r"PUBSUB_EMULATOR_HOST must be host:port \(e\.g\. 127\.0\.0\.1:8085\)"):
        PubSubSettings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": text})


def test_resource_paths_name_the_project():
    settings = PubSubSettings(project="ecom-local")
    assert settings.topic_path("orders_data") == "projects/ecom-local/topics/orders_data"
    assert settings.subscription_path("orders_data-sub") == "projects/ecom-local/subscriptions/orders_data-sub"


# --- TlsSettings --------------------------------------------------------------------------------


def test_without_a_ca_certificate_the_connection_is_plaintext():
    assert CassandraSettings.from_env({}).tls is None


def test_tls_settings_from_the_environment(tmp_path):
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("x")
    tls = CassandraSettings.from_env(
        {"CASSANDRA_SSL_CA_CERT": str(ca), "CASSANDRA_SSL_CERT": str(cert), "CASSANDRA_SSL_KEY": str(key)}
    ).tls
    assert tls == TlsSettings(ca, cert, key, check_hostname=True)
    off = TlsSettings.from_env({"CASSANDRA_SSL_CA_CERT": str(ca), "CASSANDRA_SSL_CHECK_HOSTNAME": "false"})
    assert off is not None and off.check_hostname is False


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"CASSANDRA_SSL_CA_CERT": "/no/such/ca.pem"}, "CASSANDRA_SSL_CA_CERT names no readable file"),
        ({"CASSANDRA_SSL_CERT": "c.pem", "CASSANDRA_SSL_KEY": "k.pem"}, "need CASSANDRA_SSL_CA_CERT"),
        ({"CASSANDRA_SSL_CA_CERT": "CA", "CASSANDRA_SSL_CERT": "c.pem"}, "set both or neither"),
        ({"CASSANDRA_SSL_CA_CERT": "CA", "CASSANDRA_SSL_CHECK_HOSTNAME": "maybe"}, "must be true or false"),
    ],
)
def test_a_bad_tls_setting_names_its_variable(environ, words, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    environ = {k: (str(ca) if v == "CA" else v) for k, v in environ.items()}
    with pytest.raises(ValueError, match=words):
        TlsSettings.from_env(environ)
