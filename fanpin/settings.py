"""The one settings object. Nothing else in Fanpin reads the environment.

Every value can be set with an environment variable ``FANPIN_<NAME>`` (for example
``FANPIN_DATABASE_URL``) or in a ``.env`` file in the working directory. Secrets can also be
read from files: ``FANPIN_PSEUDONYM_KEY_FILE`` names a file holding the pseudonym key.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FANPIN_", env_file=".env", extra="ignore")

    # Where local state lives: broker data, SQLite watch list, generated key, reports.
    var_dir: Path = Field(default=Path("var"))

    # Kafka. Empty bootstrap servers mean "run the local broker from var/kafka".
    kafka_bootstrap_servers: str = ""
    kafka_local_port: int = 19092
    kafka_local_controller_port: int = 19093
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL
    kafka_sasl_mechanism: str | None = None  # e.g. SCRAM-SHA-256
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
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

    def kafka_client_options(self) -> dict[str, object]:
        """Security options shared by kafka-python and aiokafka clients."""
        opts: dict[str, object] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_sasl_username
            opts["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_ssl_cafile:
            opts["ssl_cafile"] = str(self.kafka_ssl_cafile)
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
