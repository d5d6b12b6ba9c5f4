"""Shared fixtures. Session-scoped servers (Kafka, PostgreSQL) live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.kafka"]
