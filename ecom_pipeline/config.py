"""Typed settings. Only the top-level scripts read the environment; the package receives these."""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr

__all__ = [
    "LONGEST_LEASE",
    "MAX_DELIVERY_ATTEMPTS",
    "ORDERS_DLQ_TOPIC",
    "ORDERS_TOPIC",
    "PAYMENTS_DLQ_TOPIC",
    "PAYMENTS_TOPIC",
    "CassandraSettings",
    "ConsumerSettings",
    "PubSubSettings",
    "TlsSettings",
    "emulator_host",
    "optional_integer",
    "subscription_for",
]

ORDERS_TOPIC = "orders_data"
PAYMENTS_TOPIC = "payments_data"
ORDERS_DLQ_TOPIC = "dlq_orders_data"
PAYMENTS_DLQ_TOPIC = "dlq_payments_data"
# The input subscriptions' dead-letter policy moves a message to its DLQ topic after this many
# delivery attempts: 100, the most Pub/Sub allows. Pub/Sub counts every hand-back as an attempt
# (a nack, ModifyAckDeadline 0 when a consumer stops or restarts), so with 5 a few restarts
# pushed valid messages into the DLQ raw (issue 21). The consumer dead-letters a message itself,
# with its reason, as its delivery attempt nears this limit; the policy is only the backstop.
MAX_DELIVERY_ATTEMPTS = 100
LONGEST_LEASE = 600  # seconds: the longest ack deadline Pub/Sub grants

log = logging.getLogger(__name__)
_KEYSPACE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")  # fullmatch: `$` would let a trailing newline in
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_CONSISTENCY_LEVELS = {"ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"}


N = TypeVar("N", int, float)


def _is_digits(text: str) -> bool:
    """ASCII digits only: `str.isdigit()` also takes superscripts and other scripts' digits, and
    `int()` takes other scripts' digits, '+1' and '1_0'."""
    return text.isascii() and text.isdigit()


def _number(environ: Mapping[str, str], name: str, default: str, kind: type[N], *, low: N, high: N) -> N:
    """A numeric variable, or a `ValueError` that names it and says what it must be."""
    text = environ.get(name, default).strip()
    ascii_number = _is_digits(text) if kind is int else text.isascii()
    try:
        value = kind(text) if ascii_number else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        noun = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {noun} from {low} to {high}, not {text!r}")
    return value


def optional_integer(environ: Mapping[str, str], name: str, *, low: int, high: int, noun: str) -> int | None:
    """An optional integer variable: None when unset, else a `ValueError` that names it unless
    it is from `low` to `high` (`noun` says what it counts, e.g. "a port")."""
    text = environ.get(name, "").strip()
    if not text:
        return None
    if not _is_digits(text) or not low <= int(text) <= high:
        raise ValueError(f"{name} must be {noun} from {low} to {high}, not {text!r}")
    return int(text)


def subscription_for(topic: str) -> str:
    """The design's subscription name for a topic: `<topic>-sub`."""
    return f"{topic}-sub"


def emulator_host(text: str) -> str | None:
    """PUBSUB_EMULATOR_HOST as host:port, None when unset; a `ValueError` naming it otherwise
    (gRPC would wait for ever: on port 443 without a port, on a name lookup with a scheme).

    Spaces around it are refused, not stripped: google-cloud-pubsub reads the variable itself,
    as it is, and would retry for ever on ' 127.0.0.1:8085' (and use "   " as a host)."""
    if not text:
        return None
    if text != text.strip():
        raise ValueError(f"PUBSUB_EMULATOR_HOST has spaces around it (the Pub/Sub client reads it as it is): {text!r}")
    host, _, port = text.rpartition(":")
    if not host or "/" in host or any(c.isspace() for c in host) or not _is_digits(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"PUBSUB_EMULATOR_HOST must be host:port (e.g. 127.0.0.1:8085), not {text!r}")
    return text


@dataclass(frozen=True)
class PubSubSettings:
    """Where Pub/Sub is. With `emulator_host` unset the client uses real Google Cloud and ADC."""

    project: str
    emulator_host: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PubSubSettings:
        project = environ.get("GOOGLE_CLOUD_PROJECT", "").strip()
        if not project:
            raise ValueError("GOOGLE_CLOUD_PROJECT is not set (use ecom-local with the emulator)")
        return cls(project=project, emulator_host=emulator_host(environ.get("PUBSUB_EMULATOR_HOST", "")))

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"


def _is_host(text: str) -> bool:
    """An IP address, or a host name: labels of letters, digits, '-' or '_' joined by dots (the
    driver would wait on 'node-1:9042' as a name, and fail on 'a..b' with a traceback)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return all(_HOST_LABEL.fullmatch(label) for label in text.split("."))


@dataclass(frozen=True)
class CassandraSettings:
    """How to reach the cluster. The password is a SecretStr: printing settings never shows it."""

    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "ecom_store"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=True)
    consistency: str = "LOCAL_QUORUM"
    local_dc: str | None = None
    request_timeout: float = 10.0
    tls: TlsSettings | None = None  # client-to-node encryption; None: plaintext

    def __post_init__(self) -> None:
        if not _KEYSPACE_NAME.fullmatch(self.keyspace):
            raise ValueError(
                "CASSANDRA_KEYSPACE must be a letter then up to 47 letters, digits or underscores, "
                f"not {self.keyspace!r}"
            )
        if self.keyspace != self.keyspace.lower():  # refused, not quoted: one spelling everywhere
            raise ValueError(
                f"CASSANDRA_KEYSPACE must be lower case, not {self.keyspace!r}: CQL reads an unquoted name in lower "
                f"case, so set-up would make {self.keyspace.lower()!r} while the consumers look for {self.keyspace!r}"
            )
        if self.consistency not in _CONSISTENCY_LEVELS:
            raise ValueError(f"CASSANDRA_CONSISTENCY must be one of {sorted(_CONSISTENCY_LEVELS)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CassandraSettings:
        hosts = tuple(h.strip() for h in environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",") if h.strip())
        if not hosts:
            raise ValueError(
                f"CASSANDRA_HOSTS names no host: {environ['CASSANDRA_HOSTS']!r} (unset it for the local node)"
            )
        for host in hosts:
            if not _is_host(host):
                raise ValueError(
                    "CASSANDRA_HOSTS must be host names or addresses separated by commas "
                    f"(the port goes in CASSANDRA_PORT), not {host!r}"
                )
        password = environ.get("CASSANDRA_PASSWORD")
        return cls(
            hosts=hosts,
            port=_number(environ, "CASSANDRA_PORT", "9042", int, low=1, high=65535),
            keyspace=environ.get("CASSANDRA_KEYSPACE", "ecom_store"),
            username=environ.get("CASSANDRA_USERNAME") or None,
            password=SecretStr(password) if password else None,
            consistency=environ.get("CASSANDRA_CONSISTENCY", "LOCAL_QUORUM").upper(),
            local_dc=environ.get("CASSANDRA_LOCAL_DC") or None,
            request_timeout=_number(environ, "CASSANDRA_REQUEST_TIMEOUT", "10", float, low=0.1, high=3600),
            tls=TlsSettings.from_env(environ),
        )


@dataclass(frozen=True)
class TlsSettings:
    """Client TLS to Cassandra: the CA that signed the nodes' certificates (PEM), and for mutual
    TLS a client certificate and key. Hostname verification is on unless explicitly turned off."""

    ca_cert: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    check_hostname: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TlsSettings | None:
        """CASSANDRA_SSL_CA_CERT (set: TLS on), CASSANDRA_SSL_CERT and CASSANDRA_SSL_KEY (mutual
        TLS, both or neither), CASSANDRA_SSL_CHECK_HOSTNAME (true, or false to turn it off)."""
        ca = environ.get("CASSANDRA_SSL_CA_CERT", "").strip()
        cert = environ.get("CASSANDRA_SSL_CERT", "").strip()
        key = environ.get("CASSANDRA_SSL_KEY", "").strip()
        check = environ.get("CASSANDRA_SSL_CHECK_HOSTNAME", "true").strip().lower()
        if not ca:
            if cert or key:
                raise ValueError("CASSANDRA_SSL_CERT and CASSANDRA_SSL_KEY need CASSANDRA_SSL_CA_CERT")
            return None
        if bool(cert) != bool(key):
            raise ValueError("CASSANDRA_SSL_CERT and CASSANDRA_SSL_KEY go together (mutual TLS): set both or neither")
        if check not in ("true", "false"):
            raise ValueError(f"CASSANDRA_SSL_CHECK_HOSTNAME must be true or false, not {check!r}")
        for name, value in (("CASSANDRA_SSL_CA_CERT", ca), ("CASSANDRA_SSL_CERT", cert), ("CASSANDRA_SSL_KEY", key)):
            if value and not Path(value).is_file():
                raise ValueError(f"{name} names no readable file: {value}")
        settings = cls(Path(ca), Path(cert) if cert else None, Path(key) if key else None, check == "true")
        settings.ssl_context()  # a file OpenSSL refuses is a bad variable now, not a failed connection later
        if not settings.check_hostname:  # here, once per script; not per connection
            log.warning(
                "CASSANDRA_SSL_CHECK_HOSTNAME=false: a node's certificate is not checked against the address "
                "connected to, so any certificate CASSANDRA_SSL_CA_CERT signed is accepted from any host"
            )
        return settings

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.2+, only this CA, each node's certificate checked against the address the driver
        connects to (the driver passes it as server_hostname while check_hostname is on), and the
        client certificate if set. A file OpenSSL refuses is a `ValueError` naming its variable;
        an encrypted key is refused, never prompted for (that would block, or fail with Errno 22)."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert))
        except OSError as exc:  # ssl.SSLError is an OSError, like a file that cannot be read
            raise ValueError(
                f"CASSANDRA_SSL_CA_CERT is not a PEM certificate: {self.ca_cert} ({_reason(exc)})"
            ) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.check_hostname
        if self.client_cert is None or self.client_key is None:
            return context
        try:  # the certificate alone first, so that a refusal names the right variable
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(self.client_cert))
        except OSError as exc:
            raise ValueError(
                f"CASSANDRA_SSL_CERT is not a PEM certificate: {self.client_cert} ({_reason(exc)})"
            ) from exc

        def no_pass_phrase() -> str:
            raise ValueError(f"CASSANDRA_SSL_KEY is encrypted (give it without a pass phrase): {self.client_key}")

        try:
            context.load_cert_chain(str(self.client_cert), str(self.client_key), password=no_pass_phrase)
        except OSError as exc:
            raise ValueError(
                f"CASSANDRA_SSL_KEY is not the private key of CASSANDRA_SSL_CERT: {self.client_key} ({_reason(exc)})"
            ) from exc
        return context


def _reason(exc: OSError) -> str:
    """OpenSSL's words for a refusal, without the `(_ssl.c:1234)` that follows them."""
    return re.sub(r" \(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))


@dataclass(frozen=True)
class ConsumerSettings:
    """One consumer process: what it reads, where its dead letters go, how it paces itself."""

    subscription: str
    dead_letter_topic: str
    batch_size: int = 1000
    batches_in_flight: int = 4  # batches written at once, each settled on its own (consumer.py)
    exit_after_idle: float | None = None
    ack_deadline: int = 60
    stats_interval: float = 5.0
    retry_initial: float = 0.2
    retry_maximum: float = 10.0
    # A stop settles what is held for this long before handing the rest back; with a write and
    # a pull under way it can take this plus CASSANDRA_REQUEST_TIMEOUT plus 2 s (the manifests
    # give a pod 45 s, docs/scaling.md).
    stop_grace: float = 20.0
