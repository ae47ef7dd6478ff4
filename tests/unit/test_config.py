"""Typed settings from the environment: defaults, parsing, validation, and a password never shown."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ecom_pipeline.config import (
    ORDERS_DLQ_TOPIC,
    ORDERS_TOPIC,
    PAYMENTS_DLQ_TOPIC,
    PAYMENTS_TOPIC,
    CassandraSettings,
    PubSubSettings,
    TlsSettings,
    optional_integer,
    subscription_for,
)
from tests.unit.pki import certificate

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


@pytest.mark.parametrize("hosts", ["", " ", ",", " , ", ",,"])
def test_a_host_list_without_a_host_names_the_variable(hosts):
    """Set but empty is a mistake, not a wish for the local node (unset it for that)."""
    with pytest.raises(ValueError, match="CASSANDRA_HOSTS"):
        CassandraSettings.from_env({"CASSANDRA_HOSTS": hosts})


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
    ["", "1ecom", "ecom-store", "ecom store", "ecom_store; DROP KEYSPACE x", "k" * 49, '"ecom"', "ecom_store\n"],
)
def test_an_invalid_keyspace_name_names_the_variable(keyspace):
    with pytest.raises(ValueError, match=r"^CASSANDRA_KEYSPACE must be "):
        CassandraSettings.from_env({"CASSANDRA_KEYSPACE": keyspace})


@pytest.mark.parametrize("keyspace", ["Ecom_Store", "ECOM_STORE", "ecomStore", "ecom_storE"])
def test_a_keyspace_name_not_in_lower_case_is_refused_naming_the_variable(keyspace):
    """Issue 22: CQL folds an unquoted name to lower case, so set-up's `CREATE KEYSPACE Ecom_Store`
    made ecom_store while the consumers looked up 'Ecom_Store' (a bound value, case kept)."""
    with pytest.raises(ValueError, match=r"^CASSANDRA_KEYSPACE must be lower case") as error:
        CassandraSettings.from_env({"CASSANDRA_KEYSPACE": keyspace})
    assert repr(keyspace) in str(error.value)


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
        # Python's int() and float() take any script's digits; the variables take ASCII digits only.
        ("CASSANDRA_PORT", "٩٠٤٢", "CASSANDRA_PORT must be an integer from 1 to 65535, not '٩٠٤٢'"),
        ("CASSANDRA_PORT", "９０４２", "CASSANDRA_PORT must be an integer from 1 to 65535, not '９０４２'"),
        ("CASSANDRA_PORT", "²", "CASSANDRA_PORT must be an integer from 1 to 65535, not '²'"),
        ("CASSANDRA_REQUEST_TIMEOUT", "٢", "CASSANDRA_REQUEST_TIMEOUT must be a number from 0.1 to 3600, not '٢'"),
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
    [("localhost:8085", "localhost:8085"), ("127.0.0.1:8085", "127.0.0.1:8085"), ("[::1]:8085", "[::1]:8085")],
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


@pytest.mark.parametrize("text", ["   ", "\t", " 127.0.0.1:8085", "127.0.0.1:8085 ", "127.0.0.1:8085\n"])
def test_an_emulator_host_with_spaces_around_it_names_the_variable(text):
    """google-cloud-pubsub reads the variable itself, spaces and all, and would retry for ever."""
    with pytest.raises(ValueError, match=r"^PUBSUB_EMULATOR_HOST "):
        PubSubSettings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": text})


@pytest.mark.parametrize("text", ["127.0.0.1:١", "127.0.0.1:８０８５", "127.0.0.1:²", "127.0.0.1:8085²"])
def test_an_emulator_port_of_other_than_ascii_digits_names_the_variable(text):
    with pytest.raises(ValueError, match=r"^PUBSUB_EMULATOR_HOST must be host:port"):
        PubSubSettings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": text})


@pytest.mark.parametrize("text", ["²", "٨٠٨٠", "８０８０", "+80", "8_080"])
def test_an_optional_integer_takes_ascii_digits_only(text):
    with pytest.raises(
        ValueError, match=rf"^METRICS_PORT must be a port from 1 to 65535, not {re.escape(repr(text))}$"
    ):
        optional_integer({"METRICS_PORT": text}, "METRICS_PORT", low=1, high=65535, noun="a port")


def test_an_optional_integer_is_none_when_unset_and_an_int_when_set():
    assert optional_integer({}, "METRICS_PORT", low=1, high=65535, noun="a port") is None
    assert optional_integer({"METRICS_PORT": " 9100 "}, "METRICS_PORT", low=1, high=65535, noun="a port") == 9100


def test_resource_paths_name_the_project():
    settings = PubSubSettings(project="ecom-local")
    assert settings.topic_path("orders_data") == "projects/ecom-local/topics/orders_data"
    assert settings.subscription_path("orders_data-sub") == "projects/ecom-local/subscriptions/orders_data-sub"


# --- TlsSettings --------------------------------------------------------------------------------


def test_without_a_ca_certificate_the_connection_is_plaintext():
    assert CassandraSettings.from_env({}).tls is None


def _key_pem(key: ec.EllipticCurvePrivateKey, encryption: serialization.KeySerializationEncryption) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA, a client certificate it signed, the client's key in clear and encrypted,
    and a file that is no PEM at all; made for this run only, never stored."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca.pem": certificate("test-ca", ca_key, "test-ca", ca_key),
        "ca.key": _key_pem(ca_key, serialization.NoEncryption()),
        "client.pem": certificate("client", client_key, "test-ca", ca_key),
        "client.key": _key_pem(client_key, serialization.NoEncryption()),
        "encrypted.key": _key_pem(client_key, serialization.BestAvailableEncryption(b"pass phrase")),
        "passwd": b"root:x:0:0:root:/root:/bin/bash\n",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return {name: directory / name for name in files}


def test_tls_settings_from_the_environment(pki):
    ca, cert, key = pki["ca.pem"], pki["client.pem"], pki["client.key"]
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


@pytest.mark.parametrize(
    ("ca", "cert", "key", "words"),
    [
        ("passwd", None, None, "CASSANDRA_SSL_CA_CERT is not a PEM certificate"),
        ("client.key", None, None, "CASSANDRA_SSL_CA_CERT is not a PEM certificate"),
        ("ca.pem", "passwd", "client.key", "CASSANDRA_SSL_CERT is not a PEM certificate"),
        ("ca.pem", "client.key", "client.key", "CASSANDRA_SSL_CERT is not a PEM certificate"),
        ("ca.pem", "client.pem", "passwd", "CASSANDRA_SSL_KEY is not the private key of CASSANDRA_SSL_CERT"),
        ("ca.pem", "client.pem", "ca.key", "CASSANDRA_SSL_KEY is not the private key of CASSANDRA_SSL_CERT"),
        ("ca.pem", "client.pem", "encrypted.key", "CASSANDRA_SSL_KEY is encrypted"),
    ],
)
def test_a_tls_file_openssl_refuses_names_its_variable_when_the_settings_are_read(pki, ca, cert, key, words):
    """Checked up front, in one line: not at the first connection, and an encrypted key never
    prompts for its pass phrase (it would block a service, or fail with '[Errno 22]')."""
    environ = {"CASSANDRA_SSL_CA_CERT": str(pki[ca])}
    if cert and key:
        environ |= {"CASSANDRA_SSL_CERT": str(pki[cert]), "CASSANDRA_SSL_KEY": str(pki[key])}
    with pytest.raises(ValueError, match=f"^{words}") as error:
        CassandraSettings.from_env(environ)
    assert "\n" not in str(error.value)


def test_the_tls_context_trusts_only_the_given_ca_and_presents_the_clientcertificate(pki):
    tls = TlsSettings(pki["ca.pem"], pki["client.pem"], pki["client.key"])
    context = tls.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    assert TlsSettings(pki["ca.pem"], check_hostname=False).ssl_context().check_hostname is False


def test_hostname_checking_turned_off_is_one_warning_line_naming_the_variable(pki, caplog):
    """Issue 22: CASSANDRA_SSL_CHECK_HOSTNAME=false was taken in silence. Any certificate the CA
    signed is then accepted from any address: say so once, where the settings are read."""
    environ = {"CASSANDRA_SSL_CA_CERT": str(pki["ca.pem"]), "CASSANDRA_SSL_CHECK_HOSTNAME": "false"}
    with caplog.at_level(logging.WARNING, logger="ecom_pipeline"):
        settings = CassandraSettings.from_env(environ)
    assert settings.tls is not None and settings.tls.check_hostname is False
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING and "CASSANDRA_SSL_CHECK_HOSTNAME=false" in warning.getMessage()
    assert "\n" not in warning.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ecom_pipeline"):
        settings.tls.ssl_context()  # each connection builds a context: no warning again
        CassandraSettings.from_env({"CASSANDRA_SSL_CA_CERT": str(pki["ca.pem"])})  # on by default: none
    assert caplog.records == []
