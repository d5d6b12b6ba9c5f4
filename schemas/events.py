"""Versioned event contracts.

Every message on a Fanpin topic is one of the structs below, encoded as JSON. The ``kind``
field carries the event type *and* its schema version (``income.v1``); a consumer that meets
a kind it does not know sends the message to the dead-letter topic instead of guessing.

Money is ``Decimal`` (encoded as a JSON string) so amounts never drift. Every source event
carries its ``origin`` (department, file, line) and a stable ``id`` built from the
department's own natural key, so a row published twice is recognised as the same row.
"""

from __future__ import annotations

import datetime as dt
import zlib
from decimal import Decimal
from typing import Literal

import msgspec

SCHEMA_VERSION = 1

Department = Literal["statistics", "rural", "medical", "employment"]
HouseholdType = Literal["脱贫户", "一般农户", "监测户"]
Labour = Literal["普通劳动力", "技能劳动力", "弱劳动力", "无劳动力"]
VisitType = Literal["普通门诊", "门诊慢特病", "住院"]
EmploymentKind = Literal["就业登记", "工资发放", "解除劳动合同", "失业登记"]
WorkPlace = Literal["县内", "省内县外", "省外"]
Severity = Literal["高", "中", "低"]
RiskType = Literal[
    "因病",
    "因残",
    "因学",
    "因自然灾害",
    "因意外事故",
    "因产业项目失败",
    "因务工就业不稳",
    "缺劳动力",
    "因安全住房",
    "因安全饮水",
    "其他",
]


class Origin(msgspec.Struct, frozen=True, array_like=True):
    """Where an event came from: the department, the file relative to the scenario folder,
    and the line number in that file (the header is line 1)."""

    dept: Department
    file: str
    line: int


class Region(msgspec.Struct, frozen=True, tag_field="kind", tag="region.v1"):
    id: str
    origin: Origin
    code: str  # 12-digit 行政区划代码
    name: str
    level: Literal["省", "市", "县", "乡镇", "村"]


class MonitoringLine(msgspec.Struct, frozen=True, tag_field="kind", tag="monitoring_line.v1"):
    """One year's monitoring line (监测范围): yuan of yearly per-capita net income."""

    id: str
    origin: Origin
    year: int
    line: Decimal


class RosterMember(msgspec.Struct, frozen=True, tag_field="kind", tag="roster_member.v1"):
    """One person's membership of one household. ``person`` is the keyed pseudonym of the
    resident ID number; names never leave the producer."""

    id: str
    origin: Origin
    household_id: str  # 16-digit 户编号
    region_code: str  # 12-digit village code
    household_type: HouseholdType
    household_size: int
    member_no: int
    person: str
    relation: str
    labour: Labour


class IncomeReport(msgspec.Struct, frozen=True, tag_field="kind", tag="income.v1"):
    """One household's net income for one month (收入监测)."""

    id: str
    origin: Origin
    household_id: str
    region_code: str
    month: str  # YYYY-MM
    household_size: int
    wages: Decimal
    business: Decimal
    property: Decimal
    transfers: Decimal
    total: Decimal


class MedicalSettlement(msgspec.Struct, frozen=True, tag_field="kind", tag="medical.v1"):
    """One medical insurance settlement (医保结算). A reversal (冲销) carries negated amounts
    and names the settlement it cancels. ``household_id`` is filled by the roster join."""

    id: str
    origin: Origin
    settlement_id: str
    person: str
    insured_county: str
    visit_type: VisitType
    admitted: dt.date
    settled: dt.date
    total: Decimal
    basic_insurance: Decimal
    critical_illness: Decimal
    medical_assistance: Decimal
    out_of_pocket: Decimal
    reversal: bool
    reverses: str | None = None
    household_id: str | None = None


class EmploymentEvent(msgspec.Struct, frozen=True, tag_field="kind", tag="employment.v1"):
    """One employment business event (就业业务) of one person. ``household_id`` is filled by
    the roster join."""

    id: str
    origin: Origin
    business_id: str
    person: str
    region_code: str
    business_type: EmploymentKind
    date: dt.date
    employer: str
    amount: Decimal | None
    work_place: WorkPlace | None
    household_id: str | None = None


class Reason(msgspec.Struct, frozen=True):
    """One rule's finding, in words an officer can check."""

    rule: str
    risk_type: RiskType
    detail: str


class MonthFigures(msgspec.Struct, frozen=True, array_like=False):
    """One month of a household's figures, for the charts on the watch list. Money in yuan.

    ``out_of_pocket`` is the out-of-pocket medical cost settled that month (after all three
    insurance layers), a reversed settlement not counted at all. ``job_losses`` counts the
    members' separations and unemployment registrations that month, ``job_starts`` their
    job registrations (wage payments are neither)."""

    month: str  # YYYY-MM
    income: Decimal | None  # household net income; None when not reported
    out_of_pocket: Decimal
    job_losses: int
    job_starts: int


class Evidence(msgspec.Struct, frozen=True):
    """The numbers behind an alert. All money in yuan."""

    monitoring_line: Decimal
    line_year: int
    household_size: int
    # Over the 12-month window judged (the reason names it): months already reported as
    # reported, the rest forecast.
    projected_income_12m: Decimal  # household net income
    rigid_spending_12m: Decimal  # out-of-pocket medical cost after all three insurance layers
    projected_per_capita: Decimal  # (income - rigid spending) / size, yearly
    baseline_income_12m: Decimal  # the trailing 12 months of reported income
    months_of_history: int
    sources: list[Origin] = []
    # Up to 24 months ending at the alert's month, oldest first, from the first month with
    # any figure. Alerts written before it existed decode with an empty list.
    history: list[MonthFigures] = []


class Alert(msgspec.Struct, frozen=True, tag_field="kind", tag="alert.v1"):
    """An early warning for one household. Several rules firing together make one alert
    with several reasons. ``id`` is deterministic: the same household, month and rule
    version always give the same id, so a replay cannot duplicate it."""

    id: str
    household_id: str
    region_code: str
    household_type: HouseholdType
    month: str  # the data month (YYYY-MM) that raised it
    rule_version: str
    risk_type: RiskType  # the main reason
    severity: Severity
    reasons: list[Reason]
    evidence: Evidence


class DeadLetter(msgspec.Struct, frozen=True, tag_field="kind", tag="dead_letter.v1"):
    """A message no consumer could handle, with the reason why."""

    topic: str
    partition: int
    offset: int
    reason: str
    payload: str  # the original bytes, decoded as UTF-8 with replacement, truncated
    consumer: str


class FeedFile(msgspec.Struct, frozen=True, tag_field="kind", tag="feed_file.v1"):
    """The receipt of one department file, published after its rows: which feed, how many
    rows went through and how many were rejected (by reason code), or why the whole file
    was refused. The watch list keeps these so operators see which feeds are late.

    ``id`` is derived from the feed, the file and its SHA-256, so publishing the same file
    again is recognised as the same receipt."""

    id: str
    feed: str  # regions, thresholds, roster, income, medical, employment
    dept: Department
    file: str  # relative to the scenario folder, e.g. income/2025-01.csv
    sha256: str
    rows_accepted: int
    rejects: dict[str, int]  # reason code -> rows
    published_at: dt.datetime
    file_error: str | None = None


SourceEvent = (
    Region | MonitoringLine | RosterMember | IncomeReport | MedicalSettlement | EmploymentEvent
)
PartitionedEvent = RosterMember | IncomeReport | MedicalSettlement | EmploymentEvent


class EventBatch(msgspec.Struct, frozen=True, tag_field="kind", tag="batch.v1"):
    """Many person or household events in one message, all for one partition, in order.

    Department files are published this way, and the worker forwards joined events this
    way: one Kafka message per partition per batch instead of one per row, because a
    message's fixed cost (in the producer and above all in Faust) is far bigger than a
    row's. Every event in it keeps its own ``origin`` and ``id``; the partition is
    ``partition_of(key)`` of each event's key (the person pseudonym on person-events, the
    household number on household-events), so a batch holds only events that one keyed
    message would have sent to the same partition."""

    events: list[PartitionedEvent]


class RawBatch(msgspec.Struct, frozen=True, tag_field="kind", tag="batch.v1"):
    """The same batch with its events left undecoded: a consumer falls back to it when the
    whole batch does not decode, to keep the good events and dead-letter the bad ones."""

    events: list[msgspec.Raw]


AnyEvent = SourceEvent | Alert | DeadLetter | FeedFile | EventBatch

_ENCODER = msgspec.json.Encoder(decimal_format="string")
_DECODER = msgspec.json.Decoder(AnyEvent)


def encode(event: msgspec.Struct) -> bytes:
    return _ENCODER.encode(event)


_BATCH_HEAD = b'{"kind":"batch.v1","events":['
_RAW_BATCH = msgspec.json.Decoder(RawBatch)


def encode_batch(encoded: list[bytes]) -> bytes:
    """An ``EventBatch`` message from events already encoded one by one with ``encode``
    (joining bytes is much cheaper than encoding the structs again)."""
    return _BATCH_HEAD + b",".join(encoded) + b"]}"


def split_batch(data: bytes) -> list[bytes]:
    """The events of a batch message as separate encoded events, undecoded. Raises like
    ``decode_event`` when the message is not a batch at all."""
    return [bytes(raw) for raw in _RAW_BATCH.decode(data).events]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a person's or household's events on a topic of ``partitions``
    partitions. Producers and the worker both place events with this function (it is part
    of the contract: one household's events must meet in one partition, whichever process
    wrote them). CRC-32 rather than Kafka's murmur2 because it runs in C."""
    return zlib.crc32(key) % partitions


def decode_event(data: bytes) -> AnyEvent:
    """Decode one message. Raises ``msgspec.DecodeError`` / ``ValidationError`` with a
    readable message on anything that is not a known event kind and version."""
    return _DECODER.decode(data)


def json_schemas() -> dict[str, dict[str, object]]:
    """The JSON Schema of each event kind, as published in ``schemas/json/``."""
    out: dict[str, dict[str, object]] = {}
    for struct in (Region, MonitoringLine, RosterMember, IncomeReport, MedicalSettlement,
                   EmploymentEvent, Alert, DeadLetter, FeedFile, EventBatch):
        tag = struct.__struct_config__.tag
        assert isinstance(tag, str)
        out[tag] = msgspec.json.schema(struct)
    return out
