"""The one settings object. Nothing else in Fanpin reads the environment.

Every value can be set with an environment variable ``FANPIN_<NAME>`` (for example
``FANPIN_DATABASE_URL``) or in a ``.env`` file in the working directory. Secrets can also be
read from files: ``FANPIN_PSEUDONYM_KEY_FILE`` names a file holding the pseudonym key, and
``FANPIN_KAFKA_SASL_PASSWORD_FILE`` one holding the Kafka password.
"""

from __future__ import annotations

import secrets
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """Settings that contradict each other (the message names the variables)."""


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FANPIN_", env_file=".env", extra="ignore")

    # Where local state lives: broker data, SQLite watch list, generated key, reports.
    var_dir: Path = Field(default=Path("var"))

    # Kafka. Empty bootstrap servers mean "run the local broker from var/kafka".
    kafka_bootstrap_servers: str = ""
    kafka_local_port: int = 19092
    kafka_local_controller_port: int = 19093
    # Security (docs/operations.md, "Securing Kafka"). The protocol defaults from what is
    # set: SASL_SSL with a SASL mechanism and TLS files, SASL_PLAINTEXT with a mechanism
    # only, SSL with TLS files only, else PLAINTEXT.
    kafka_security_protocol: SecurityProtocol | None = None
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None  # a file holding the password instead
    kafka_ssl_cafile: Path | None = None  # CA bundle (PEM) the brokers' certificates chain to
    kafka_ssl_certfile: Path | None = None  # client certificate (PEM), for mutual TLS
    kafka_ssl_keyfile: Path | None = None  # its private key (PEM), if not in the certfile
    kafka_ssl_key_password: SecretStr | None = None  # if that key is encrypted
    kafka_ssl_check_hostname: bool = True
    # How long a command waits to connect and authenticate before it gives up with a reason.
    kafka_connect_timeout_seconds: float = 15.0
    topic_prefix: str = "fanpin"
    partitions: int = 4
    # Replication of every topic Fanpin and Faust create. 1 suits one broker; production
    # runs 3 brokers with 3 here and min.insync.replicas=2 on the brokers.
    replication_factor: int = 1

    # The watch list. Empty means SQLite under var/.
    database_url: str = ""

    # Pseudonyms: keyed HMAC of resident ID numbers.
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None

    # Detection thresholds (per region and year); empty means the bundled defaults.
    rules_file: Path | None = None

    # Processes.
    web_host: str = "127.0.0.1"
    web_port: int = 18080
    # Mark the session cookies HTTPS-only: set it when the pages are served behind TLS.
    web_secure_cookies: bool = False
    log_level: str = "INFO"

    # Notifications (consumers/watchlist/notify.py). Links in messages point at
    # web_base_url; empty means http://{web_host}:{web_port}. Set it to the address officers
    # actually reach (e.g. https://fanpin.example.gov.cn) when web sits behind a proxy.
    web_base_url: str = ""
    # E-mail goes out through this SMTP relay; STARTTLS and login are optional.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "fanpin@localhost"
    # The notifier checks deadlines and sends every this many seconds, and sends one
    # person at most one message per channel per notify_min_interval_seconds.
    notify_interval_seconds: float = 60
    notify_min_interval_seconds: float = 300

    # Metrics. The worker and the sink serve /metrics on these ports (0 turns it off); web
    # serves it on its own port. Batch commands write <dir>/fanpin_<command>.prom for a
    # node-exporter textfile collector, and push to a Pushgateway when its URL is set.
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 18091
    sink_metrics_port: int = 18092
    metrics_textfile_dir: Path | None = None  # default: var/metrics
    pushgateway_url: str = ""

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_local_port}"

    @property
    def uses_local_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def watchlist_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'watchlist.db').resolve()}"

    @property
    def metrics_dir(self) -> Path:
        return self.metrics_textfile_dir or self.var_dir / "metrics"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        """``sasl_ssl`` and ``scram_sha_256`` are read as SASL_SSL and SCRAM-SHA-256."""
        if isinstance(value, str):
            value = value.strip().upper()
            if value.startswith("SCRAM"):
                value = value.replace("_", "-")
            return value or None
        return value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        """Refuse contradictory Kafka security settings up front, naming the variables.

        Raises ``SettingsError``, not ``ValueError``: pydantic would wrap a ValueError in a
        ValidationError whose text repeats every input, the password among them."""
        protocol = self.kafka_protocol
        sasl = protocol.startswith("SASL_")
        if self.kafka_sasl_mechanism and not sasl:
            raise SettingsError(
                f"FANPIN_KAFKA_SASL_MECHANISM is set but FANPIN_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}: use SASL_PLAINTEXT or SASL_SSL (or unset it)")
        if sasl and not self.kafka_sasl_mechanism:
            raise SettingsError(f"FANPIN_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                             "FANPIN_KAFKA_SASL_MECHANISM (e.g. SCRAM-SHA-256)")
        if (self.kafka_sasl_username or self.kafka_sasl_password
                or self.kafka_sasl_password_file) and not self.kafka_sasl_mechanism:
            raise SettingsError("a Kafka SASL user or password is set but "
                             "FANPIN_KAFKA_SASL_MECHANISM is not (e.g. SCRAM-SHA-256)")
        if sasl and not self.kafka_sasl_username:
            raise SettingsError("FANPIN_KAFKA_SASL_USERNAME is required with SASL")
        if sasl and self.kafka_sasl_password is None and self.kafka_sasl_password_file is None:
            raise SettingsError("SASL needs FANPIN_KAFKA_SASL_PASSWORD or "
                             "FANPIN_KAFKA_SASL_PASSWORD_FILE")
        if self.kafka_sasl_password is not None and self.kafka_sasl_password_file is not None:
            raise SettingsError("set FANPIN_KAFKA_SASL_PASSWORD or FANPIN_KAFKA_SASL_PASSWORD_FILE,"
                             " not both")
        if self._tls_files_set and not protocol.endswith("SSL"):
            raise SettingsError(f"Kafka TLS files are set but FANPIN_KAFKA_SECURITY_PROTOCOL is "
                             f"{protocol}: use SSL or SASL_SSL (or unset it)")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise SettingsError("FANPIN_KAFKA_SSL_KEYFILE needs FANPIN_KAFKA_SSL_CERTFILE")
        return self

    @property
    def _tls_files_set(self) -> bool:
        return bool(self.kafka_ssl_cafile or self.kafka_ssl_certfile or self.kafka_ssl_keyfile)

    @property
    def kafka_protocol(self) -> str:
        """The security protocol in force: the one set, or the one the other settings imply."""
        if self.kafka_security_protocol:
            return self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            return "SASL_SSL" if self._tls_files_set else "SASL_PLAINTEXT"
        return "SSL" if self._tls_files_set else "PLAINTEXT"

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_protocol in ("SSL", "SASL_SSL")

    def kafka_sasl_secret(self) -> str | None:
        """The SASL password, from FANPIN_KAFKA_SASL_PASSWORD or the file named by
        FANPIN_KAFKA_SASL_PASSWORD_FILE (read each time, so a rotated file is picked up by
        the next client)."""
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is not None:
            path = self.kafka_sasl_password_file
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise FileNotFoundError(
                    f"FANPIN_KAFKA_SASL_PASSWORD_FILE {path} cannot be read: "
                    f"{exc.strerror or exc}") from exc
        return None

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for aiokafka and Faust (kafka-python is given the same files):
        TLS 1.2 or later, the brokers' certificates checked against the CA file (or the
        system's CAs without one), their host names checked unless turned off, and the
        client certificate when one is set."""
        if not self.kafka_uses_tls:
            return None
        for var, path in (("CAFILE", self.kafka_ssl_cafile),
                          ("CERTFILE", self.kafka_ssl_certfile),
                          ("KEYFILE", self.kafka_ssl_keyfile)):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"FANPIN_KAFKA_SSL_{var} {path} does not exist")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.kafka_ssl_check_hostname
        if self.kafka_ssl_cafile:
            ctx.load_verify_locations(cafile=str(self.kafka_ssl_cafile))
        else:
            ctx.load_default_certs()
        if self.kafka_ssl_certfile:
            ctx.load_cert_chain(
                str(self.kafka_ssl_certfile),
                str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                self.kafka_ssl_key_password.get_secret_value()
                if self.kafka_ssl_key_password else None)
        return ctx

    def _sasl_options(self) -> dict[str, object]:
        if not self.kafka_protocol.startswith("SASL_"):
            return {}
        return {"sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_secret()}

    def kafka_client_options(self) -> dict[str, object]:
        """Security options for kafka-python clients (producers, the sink, the admin)."""
        opts: dict[str, object] = {"security_protocol": self.kafka_protocol}
        opts.update(self._sasl_options())
        if self.kafka_uses_tls:
            opts["ssl_check_hostname"] = self.kafka_ssl_check_hostname
            if self.kafka_ssl_cafile:
                opts["ssl_cafile"] = str(self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                opts["ssl_certfile"] = str(self.kafka_ssl_certfile)
            if self.kafka_ssl_keyfile:
                opts["ssl_keyfile"] = str(self.kafka_ssl_keyfile)
            if self.kafka_ssl_key_password is not None:
                opts["ssl_password"] = self.kafka_ssl_key_password.get_secret_value()
        return opts

    def aiokafka_client_options(self) -> dict[str, object]:
        """The same security options for aiokafka clients (the worker's own consumers),
        which take an ``ssl_context`` instead of file names."""
        opts: dict[str, object] = {"security_protocol": self.kafka_protocol}
        opts.update(self._sasl_options())
        if self.kafka_uses_tls:
            opts["ssl_context"] = self.kafka_ssl_context()
        return opts

    def as_env(self) -> dict[str, str]:
        """These settings as FANPIN_* variables, so a child process sees exactly them."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"FANPIN_{name.upper()}"] = str(value)
        return env

    def pseudonym_secret(self) -> bytes:
        """The HMAC key for pseudonyms.

        Production sets FANPIN_PSEUDONYM_KEY or FANPIN_PSEUDONYM_KEY_FILE. With neither, a
        random key is generated once into var/pseudonym.key so a local demo works, and every
        later run on this machine reuses it (pseudonyms must stay stable to join people).
        """
        if self.pseudonym_key is not None:
            return self.pseudonym_key.get_secret_value().encode()
        path = self.pseudonym_key_file or self.var_dir / "pseudonym.key"
        if not path.exists():
            if self.pseudonym_key_file is not None:
                raise FileNotFoundError(f"pseudonym key file {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once per process."""
    return Settings()
