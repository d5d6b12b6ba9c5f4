"""The contract between Fanpin's processes: every Kafka message is one of these events."""

from schemas.events import (
    SCHEMA_VERSION,
    Alert,
    DeadLetter,
    EmploymentEvent,
    Evidence,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    MonthFigures,
    Origin,
    Region,
    RosterMember,
    decode_event,
    encode,
)

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "DeadLetter",
    "EmploymentEvent",
    "Evidence",
    "IncomeReport",
    "MedicalSettlement",
    "MonitoringLine",
    "MonthFigures",
    "Origin",
    "Region",
    "RosterMember",
    "decode_event",
    "encode",
]
