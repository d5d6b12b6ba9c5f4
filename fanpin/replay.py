"""Replaying a scenario folder (laid out like the departments' sample) through the pipeline.

Order matters for a faithful replay, and the departments' own schedule gives it:
reference data and the roster first, then month by month the medical and employment files,
then that month's income reports. Before a month's income is published, replay waits
until the roster join has passed every person event of that month to its household, so
each household is judged on the month's complete data, and two replays judge alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fanpin.kafka_admin import pipeline_groups, sink_group, worker_group
from fanpin.privacy import Pseudonymiser
from fanpin.services import Services
from fanpin.settings import Settings
from producers.common import ParseContext
from producers.publish import Publisher, PublishResult
from producers.scenario import load_known_households, scenario_files

log = logging.getLogger(__name__)


@dataclass
class ReplaySummary:
    files: int = 0
    published: PublishResult = field(default_factory=PublishResult)
    seconds: float = 0.0
    entries_by_state: dict[str, int] = field(default_factory=dict)
    alerts: int = 0


def replay(settings: Settings, root: Path, *, timeout: float = 600.0, progress: bool = True,
           on_file: Callable[[str], None] | None = None) -> ReplaySummary:
    started = time.monotonic()
    summary = ReplaySummary()
    roster = root / "roster.csv"
    ctx = ParseContext(
        pseudonymiser=Pseudonymiser(settings.pseudonym_secret()),
        known_households=load_known_households(roster) if roster.exists() else None,
    )
    files = scenario_files(root)
    if not files:
        raise FileNotFoundError(f"{root} holds no department files (see the feeds README)")
    with Services(settings) as services:
        assert services.admin is not None
        admin = services.admin
        publisher = Publisher(settings)
        worker, sink = worker_group(settings), sink_group(settings)
        person_topics = [settings.topic("person-events")]
        try:
            for rel, path, module in files:
                if rel.startswith("income/"):
                    # The month's person events must reach their households first.
                    publisher.flush()
                    admin.wait_caught_up(worker, person_topics, timeout=timeout,
                                         alive=services.check_alive)
                if on_file:
                    on_file(rel)
                summary.published.merge(publisher.publish_file(module, path, rel, ctx,
                                                               progress=progress))
                summary.files += 1
            publisher.flush()
        finally:
            publisher.close()
        admin.wait_caught_up(worker, person_topics, timeout=timeout, alive=services.check_alive)
        admin.wait_caught_up(worker, [settings.topic("household-events")], timeout=timeout,
                             alive=services.check_alive)
        # Alerts and the file receipts: the last file's rejects must be on record too.
        admin.wait_caught_up(sink, pipeline_groups(settings)[sink], timeout=timeout,
                             alive=services.check_alive)
        summary.alerts = sum(admin.end_offsets(settings.topic("alerts")).values())
    summary.seconds = time.monotonic() - started
    return summary
