"""``fanpin simulate``: the project's own scenario generator.

Writes a scenario folder laid out exactly like the departments' sample
(``../shared/feeds/sample``, bundled as ``data/sample``): ``regions.csv``,
``thresholds.csv``, ``roster.csv``, ``income/``, ``medical/`` and ``employment/`` month
files, ``bad_rows.csv`` and ``truth.csv``, in the departments' encodings (BOM on
``regions.csv`` and ``roster.csv``, GBK for ``medical/``), with CRLF line ends.

The world is the one measured in the sample (300 households, 2024-11..2026-10); the
constants below were calibrated on it.

Households
    Type 脱贫户/一般农户/监测户 about 55/38/7 %, size 1-6. A one-person household is an old
    man (45-85); otherwise 户主 (male, 27-72) and 配偶 (female, 6 years younger to 4 older);
    the other places are children (子/女, 20-33 years younger, more for old heads, at
    least 1 year old) or, when the head is under 43, his parents. Labour ability follows
    age: under 16 无劳动力, 16-59 普通/技能/弱劳动力 61/28/11 %, 60-69 弱劳动力, 70 and over
    无劳动力. ``N*72/300`` villages (the sample's tree for 300), households assigned at
    random and numbered per village in roster order.

Income (收入监测), per month, in 2024 yuan (scaled by the first year's line)
    Each 普通/技能 member earns wages with probability 0.65 (监测户 0.45); 60 % of earners
    hold a formal job (就业业务 events, wage paid on the 15th). Wages per earner
    U(2240, 5620) (技能 U(2550, 6670)) times U(0.93, 1.07) each month; out-of-province
    (省外) earners earn nothing in February with probability 0.5, any earner gets a
    December bonus (+50..150 %) with probability 0.27. The income report's wages are the
    earners' sum times U(0.95, 1.05). Net business income U(250, 1480) a month
    (监测户 U(150, 850)) times a harvest profile (low in February, peak in September) and
    U(0.85, 1.15). Property income for 27 % of households, U(10, 120). Transfers
    U(35, 260) (监测户 U(100, 280) per person) plus 185 a month per member aged 60+; a
    household with no earner gets 低保-like transfers of U(520, 1000) per person instead
    (probability 0.9). No trend from year to year. Nobody is made poor on purpose: the
    households poor all along (about 9 %) are those with no earner and no 低保, or big
    families living on one low wage (unless ``--poor-share`` is given).

Medical (医保结算明细)
    Each person has a visit in a month with probability 0.25 (aged 60+: 0.6); 1.1 % of
    visits are inpatient stays (total cost lognormal around 15000), 33 % 门诊慢特病, the
    rest 普通门诊 (U(40, 900)). Basic insurance pays U(40, 60) % of an outpatient bill,
    U(55, 72) % of a stay; critical-illness insurance U(30, 55) % of what is left above
    15000; medical assistance U(15, 40) % of the rest of a stay for 脱贫户 and 监测户;
    the rest is 个人自付. Settlement day U(1, 28), stays 0-12 days (admission not before
    the 1st). At ``mess=1`` 3 % of settlements appear in the next month's file (late),
    0.45 % twice in the same file, 0.3 % are reversed (冲销, all amounts negated) in the
    file after the original's.

Shocks (冲击), 12 % of households, in months M/4 .. M-3
    因病 (38 %): a member has 2-3 monthly inpatient stays of 30000-110000, then 8-12
    months of 门诊慢特病 visits of 600-2500; an earning patient earns nothing for 4-12
    months (no events, the wage rows stop); half of these households lose about 60 % of
    their business income for 6-10 months. 因务工就业不稳 (38 %, only households with
    earners): one earner (and each other with probability 0.5) loses the job for 5-12
    months (formal jobs: 解除劳动合同 on day 1-10, half of them 失业登记, back with the
    same employer with 就业登记 on the 2nd). 因产业项目失败 (24 %): business income falls
    to 0-25 % for 8-13 months. Besides shocks, 0.57 % of formal workers a month change
    jobs (解除劳动合同 and, on day 20-28, 就业登记 with a new employer; no wage that
    month): not a risk.

Truth (truth.csv)
    A household is at risk in month M when, over the 12 months from M, its income minus
    its out-of-pocket medical spending (by settlement date; a reversed settlement does
    not count, a duplicated one counts once) per person is below the line of M's year;
    11 months beyond the written span are simulated for that. 风险原因 is the shock type
    when the first risk window reaches the shock month, else 缺劳动力 for a household
    without earners, else 其他. 基线人均年收入 is the first 12 months' income per
    person before month-to-month noise (shock effects included). Truth is computed
    from the true values, before invalid rows are made.

Invalid rows (bad_rows.csv), 0.25 % of the monthly files' rows at ``mess=1``
    Made the way the sample makes them: income 家庭纯收入 +500 (total_mismatch),
    工资性收入 "三千" (non_numeric_amount), 户编号 ending 9999 (unknown_household; the
    household's real row is gone), 统计月份 "2026-00" (bad_month); medical 个人自付
    +123.45 (amounts_do_not_add_up), a wrong check character (bad_id_checksum), empty
    医疗总费用 (missing_total), 结算日期 "2026/13/45" (bad_date), negated amounts on a
    正常 row (negative_without_reversal); employment, on wage rows, empty 金额
    (wage_without_amount), a wrong check character, 业务日期 "20261345" (bad_date),
    业务类型 "社保转移" (unknown_business_type).

Determinism: every household draws from its own ``random.Random`` streams seeded from
``seed`` and its index (itself, its shock, its messiness), villages and the last pass
from streams named after the seed; households are simulated in chunks of whole
counties, in worker processes when there are many, and the files do not depend on how
many processes ran.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------
# Vocabulary and calibration (measured on data/sample)

HOUSEHOLD_TYPES = ("脱贫户", "一般农户", "监测户")
TYPE_WEIGHTS = (0.547, 0.383, 0.070)
SIZE_WEIGHTS = (0.093, 0.187, 0.230, 0.260, 0.127, 0.103)  # sizes 1..6

SHOCKS = {"illness": "因病", "job": "因务工就业不稳", "business": "因产业项目失败"}
SHOCK_ALIASES = {
    "illness": "illness", "ill": "illness", "因病": "illness",
    "job": "job", "work": "job", "因务工就业不稳": "job",
    "business": "business", "farm": "business", "因产业项目失败": "business",
}
DEFAULT_MIX = {"illness": 0.38, "job": 0.38, "business": 0.24}
DEFAULT_SHOCK_RATE = 0.12
#: Share of households with at least one earner (job shocks go only to those; the
#: per-household job-shock chance is divided by this so the overall mix holds).
EARNER_SHARE = 0.75

P_WORK = 0.65
P_WORK_MONITORED = 0.45
P_FORMAL = 0.60
PLACES = ("省外", "省内县外", "县内")
PLACE_CUM = (0.43, 0.72, 1.0)
EMPLOYERS = ("白沙县茶叶合作社", "东莞市某电子厂", "青山市建工集团", "宁波某制衣厂",
             "云溪县食品厂", "石门县物流公司", "示范省纺织有限公司")
WAGE_RANGE = {"普通劳动力": (2240.0, 5620.0), "技能劳动力": (2550.0, 6670.0)}
P_FEB_OFF = 0.50  # 省外 earners with no pay in the Spring Festival month
P_DEC_BONUS = 0.27
P_JOB_CHANGE = 0.0057  # per formal worker and month

_SEASON_RAW = (0.48, 0.385, 0.572, 0.769, 0.857, 0.96, 1.242, 1.727, 1.91, 1.543, 0.972, 0.58)
SEASON = tuple(x * 12 / sum(_SEASON_RAW) for x in _SEASON_RAW)
PENSION = 185.0
P_DIBAO = 0.9
P_PROPERTY = 0.27

HOSPITALS = ("云溪县人民医院", "青山市第一人民医院", "示范省人民医院", "乡镇卫生院",
             "白沙县人民医院", "石门县中医院")
P_VISIT_YOUNG = 0.25
P_VISIT_OLD = 0.60
_LOG_Q_YOUNG = math.log(1.0 - P_VISIT_YOUNG)
_LOG_Q_OLD = math.log(1.0 - P_VISIT_OLD)
P_INPATIENT = 0.011
P_CHRONIC = 0.33
LABOUR = ("普通劳动力", "技能劳动力", "弱劳动力", "无劳动力")
CRITICAL_DEDUCTIBLE = 15000.0
CRITICAL_CENTS = int(CRITICAL_DEDUCTIBLE * 100)

# Mess at mess=1.0.
P_INVALID = 0.0025
P_LATE = 0.030
P_DUPLICATE = 0.0045
P_REVERSAL = 0.0030

#: Settlement and business ids of household ``i`` are numbered from ``i * 1000`` (so
#: households can be simulated in parallel; a household has at most 25 a month, so more
#: than 1000 for longer spans); reversals come after all households.
IDS_PER_HOUSEHOLD = 1000
MAX_IDS_PER_MONTH = 25
MAX_HOUSEHOLDS = 990_000

#: Months simulated beyond the written span, so the last months' 12-month windows can
#: be judged.
EXTRA_MONTHS = 11

#: Monitoring lines known from the sample; other years are extrapolated (+300 a year
#: after, -250 a year before).
KNOWN_LINES = {2023: 8050, 2024: 8300, 2025: 8700, 2026: 9000, 2027: 9300, 2028: 9600}
CALIBRATION_LINE = 8300  # incomes above are in 2024 yuan

SURNAMES = ("丁万严于付任何余侯冯刘卢史叶向吕吴周唐夏姚姜孔孙孟宋尹崔廖张"
            "彭徐戴方曹曾朱李杜杨林梁武段毛江汤汪沈潘熊王田白石秦程罗肖"
            "胡苏范莫董蒋蔡薛袁覃许谢谭贺贾赵邓邱邵邹郑郝郭金钟钱阎陆陈"
            "陶雷韦韩顾马高魏黄黎龙龚")
GIVEN = ("东丽伟兰军凤刚勇华卫国娜娟小平庆建强德志敏文明春杰桂梅永"
         "江洋海涛燕玉磊秀秋红艳芳英菊超金长霞静")

# Region names: the sample's first, then made-up ones.
_CITY_NAMES = tuple(x + "市" for x in "青山 绿水 金川 玉泉 松林 桃源 凤鸣 龙岗 清河 安平".split())
_COUNTY_NAMES = tuple(x + "县" for x in (
    "云溪 石门 白沙 长宁 平川 永安 丰乐 新田 宝山 临江 "
    "广福 仁和 太平 华阳 兴隆 福泉 嘉禾 瑞金 文昌 东源").split())
_TOWNSHIPS = ("城关镇", "河口镇", "青石乡", "柳树乡", "龙潭镇")
_VILLAGES = ("东山村", "西河村", "南坪村", "北岭村", "中坝村", "新民村")
_PLACE_A = "东西南北中上下前后大小新老高长清白红黄青金银石沙松柏桃李杏枣茶竹梅兰"
_PLACE_B = "山河坪岭坝湾塘桥坡沟岗溪冲林田园庄家口湖洲"

INCOME_HEADER = ",".join(["户编号", "行政区划代码", "统计月份", "家庭人口数", "工资性收入",
                          "经营净收入", "财产净收入", "转移净收入", "家庭纯收入"])
MEDICAL_HEADER = ",".join(["结算单号", "身份证号", "姓名", "参保地区划", "就诊类别",
                           "医疗机构名称", "入院日期", "结算日期", "医疗总费用",
                           "统筹基金支付", "大病保险支付", "医疗救助支付", "个人自付",
                           "结算类型", "原结算单号"])
EMPLOYMENT_HEADER = ",".join(["业务流水号", "身份证号", "姓名", "行政区划代码", "业务类型",
                              "业务日期", "用工单位", "金额", "就业地区"])
ROSTER_HEADER = ",".join(["户编号", "行政区划代码", "户类型", "家庭人口数", "成员序号", "姓名",
                          "身份证号", "与户主关系", "劳动技能"])
TRUTH_HEADER = ",".join(["户编号", "户类型", "家庭人口数", "风险", "首次风险月份", "风险原因",
                         "冲击类型", "冲击月份", "基线人均年收入"])
REGIONS_HEADER = "行政区划代码,名称,级别"
THRESHOLDS_HEADER = "年度,监测范围"
BAD_ROWS_HEADER = "文件,行号,原因"

MONTHLY = ("income", "medical", "employment")
ENCODINGS = {"income": "utf-8", "medical": "gbk", "employment": "utf-8"}
HEADERS = {"income": INCOME_HEADER, "medical": MEDICAL_HEADER, "employment": EMPLOYMENT_HEADER}
OUTPUT_FILES = ("regions.csv", "thresholds.csv", "roster.csv", "truth.csv", "bad_rows.csv")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

_C2 = tuple(f"{i:02d}" for i in range(100))
# Rows in the temporary month files end in _KEEP when they must not be made invalid
# (duplicated and reversed settlements, reversals, employment rows other than wages);
# a reversal's own 结算单号 is _REV_ID until the last pass numbers it.
_KEEP = "\x01"
_REV_ID = "\x02"


class SimulateError(Exception):
    """Bad arguments or an unusable output folder."""


def id_check(first17: str) -> str:
    """The GB 11643 (ISO 7064 MOD 11-2) check character."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def monitoring_line(year: int) -> int:
    if year in KNOWN_LINES:
        return KNOWN_LINES[year]
    if year > 2028:
        return KNOWN_LINES[2028] + 300 * (year - 2028)
    return KNOWN_LINES[2023] - 250 * (2023 - year)


def parse_mix(text: str | None) -> dict[str, float]:
    """``illness=0.4,job=0.35,business=0.25`` (Chinese names work too); normalised to 1.
    Types not named get 0."""
    if text is None or not text.strip():
        return dict(DEFAULT_MIX)
    mix = {k: 0.0 for k in SHOCKS}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        key = SHOCK_ALIASES.get(name.strip().lower())
        if not sep or key is None:
            raise SimulateError(f"--mix: {part.strip()!r} should be one of "
                                f"{', '.join(SHOCKS)} = a weight")
        try:
            w = float(value)
        except ValueError:
            raise SimulateError(f"--mix: {value.strip()!r} is not a number") from None
        if not w >= 0 or math.isinf(w):
            raise SimulateError(f"--mix: weight {value.strip()!r} must be 0 or more")
        mix[key] = w
    total = sum(mix.values())
    if total <= 0:
        raise SimulateError("--mix: at least one weight must be positive")
    return {k: v / total for k, v in mix.items()}


def parse_month(text: str) -> tuple[int, int]:
    try:
        y, m = text.strip().split("-")
        year, month = int(y), int(m)
    except ValueError:
        raise SimulateError(f"--start: {text!r} is not YYYY-MM") from None
    if not (1900 <= year <= 2090 and 1 <= month <= 12 and len(y) == 4):
        raise SimulateError(f"--start: {text!r} is not a month YYYY-MM")
    return year, month


# --------------------------------------------------------------------------------------
# Regions


@dataclass(frozen=True)
class Regions:
    rows: list[tuple[str, str, str]]  # (code, name, level) in file order
    villages: list[str]  # 12-digit village codes


def _names(first: tuple[str, ...], n: int, suffix: str) -> list[str]:
    """``first``, then made-up names (two characters and ``suffix``), ``n`` in all."""
    out = list(first)
    seen = set(out)
    for a in _PLACE_A:
        for b in _PLACE_B:
            if len(out) >= n:
                return out[:n]
            name = a + b + suffix
            if name not in seen:
                seen.add(name)
                out.append(name)
    i = 1
    while len(out) < n:  # pragma: no cover - more than ~700 names per level
        out.append(f"第{i}{suffix}")
        i += 1
    return out[:n]


def build_regions(households: int) -> Regions:
    """One province (99, 示范省), cities, counties, townships and villages: the sample's
    tree (1 city, counties of 4, 5 and 3 townships of 6 villages) for 300 households,
    grown in every level for more (about 4.2 households a village)."""
    n_villages = max(1, round(households * 72 / 300))
    f = max(1.0, (n_villages / 72) ** 0.25)
    per_township = max(1, round(6 * f))
    township_cycle = [max(1, round(x * f)) for x in (4, 5, 3)]
    per_city = min(79, max(1, round(3 * f)))
    n_townships = math.ceil(n_villages / per_township)
    counties: list[int] = []  # townships per county
    left = n_townships
    while left > 0:
        t = min(left, township_cycle[len(counties) % 3], 999)
        counties.append(t)
        left -= t
    n_cities = math.ceil(len(counties) / per_city)
    if n_cities > 99:
        raise SimulateError("too many households for one province's region codes")
    city_names = _names(_CITY_NAMES, n_cities, "市")
    county_names = _names(_COUNTY_NAMES, len(counties), "县")
    township_names = _names(_TOWNSHIPS, max(township_cycle), "镇")
    village_names = _names(_VILLAGES, per_township, "村")
    rows = [("990000000000", "示范省", "省")]
    villages: list[str] = []
    v_left = n_villages
    ci = 0
    for city in range(n_cities):
        ccode = f"99{city + 1:02d}"
        rows.append((ccode + "00000000", city_names[city], "市"))
        for k in range(per_city):
            if ci >= len(counties):
                break
            kcode = f"{ccode}{21 + k:02d}"
            rows.append((kcode + "000000", county_names[ci], "县"))
            for t in range(counties[ci]):
                tcode = f"{kcode}{t + 1:03d}"
                rows.append((tcode + "000", township_names[t], "乡镇"))
                for v in range(min(per_township, v_left)):
                    code = f"{tcode}{v + 1:03d}"
                    rows.append((code, village_names[v], "村"))
                    villages.append(code)
                v_left -= min(per_township, v_left)
            ci += 1
    return Regions(rows, villages)


# --------------------------------------------------------------------------------------
# Output


@dataclass
class Summary:
    households: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MONTHLY, 0))
    roster_rows: int = 0
    invalid: int = 0
    at_risk: int = 0
    shocked: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rows = "  ".join(f"{k} {v}" for k, v in self.rows.items())
        return (f"households {self.households} (roster rows {self.roster_rows})  rows: {rows}  "
                f"invalid rows {self.invalid}  shocked {self.shocked}  "
                f"at risk {self.at_risk}  ({self.seconds:.1f}s)")


def _fmt(cents: int) -> str:
    if cents < 0:
        return "-" + _fmt(-cents)
    return f"{cents // 100}.{cents % 100:02d}"


def _neg(cents: int) -> str:
    """A negated amount as the sample writes it: ``-0.00`` for zero."""
    return "-" + _fmt(cents)


def _write_text(path: Path, header: str, lines: Iterable[str], encoding: str) -> None:
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write("".join(line + "\r\n" for line in (header, *lines)))


def prepare_output(out: Path, force: bool) -> None:
    """Create OUT, or refuse a non-empty one unless ``force`` (then only the files this
    command writes are removed)."""
    if out.exists() and not out.is_dir():
        raise SimulateError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise SimulateError(f"{out} is not empty (use --force to overwrite)")
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        for kind in MONTHLY:
            d = out / kind
            if d.is_dir():
                for p in d.glob("*.csv"):
                    p.unlink()
        shutil.rmtree(out / ".simulate-tmp", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------
# The simulation


@dataclass(slots=True)
class _Worker:
    member: int
    base: float
    formal: bool
    place: str
    employer: str
    status: int = 0  # 0 working, 1 out of work (shock), 2 ill
    until: int = 0  # month index when the status ends
    out_months: int = 0  # a job shock's months out of work (0: not hit)
    register: bool = False  # ... with 失业登记
    abroad: bool = False  # 省外: may earn nothing in February


@dataclass
class _Config:
    households: int
    months: int
    seed: int
    start: tuple[int, int]
    mess: float
    shock_rate: float
    mix: dict[str, float]
    poor_share: float | None


class _Plan:
    """What every chunk of households shares (read-only; pickled to worker processes):
    the months, the lines, the regions and each household's number.

    Households are simulated in chunks of whole counties, so a chunk can check that its
    ID numbers are unique (an ID number starts with the county code) and chunks can run in
    parallel; each household numbers its settlements and events from ``i * 1000``."""

    def __init__(self, cfg: _Config, out: Path) -> None:
        self.cfg = cfg
        self.M = cfg.months
        self.T = cfg.months + EXTRA_MONTHS
        y, m = cfg.start
        self.ym: list[tuple[int, int]] = []
        for k in range(self.T):
            mm = m - 1 + k
            self.ym.append((y + mm // 12, mm % 12 + 1))
        self.month_text = [f"{yy}-{mo:02d}" for yy, mo in self.ym]
        self.slash = [f"{yy}/{mo:02d}/" for yy, mo in self.ym]
        self.month_of = [mo for _, mo in self.ym]
        self.compact = [f"{yy}{mo:02d}" for yy, mo in self.ym]
        # Per window start: the line in cents (compared with 12 months' cents per person).
        self.line_cents = [monitoring_line(yy) * 100 for yy, _ in self.ym]
        self.income_scale = monitoring_line(y) / CALIBRATION_LINE
        lo = max(0, round(self.M / 4))
        hi = max(lo, self.M - 3)
        self.shock_months = (min(lo, self.M - 1), min(hi, self.M - 1))
        mess = cfg.mess
        self.p_late = min(0.5, P_LATE * mess)
        self.p_dup = min(0.25, P_DUPLICATE * mess)
        self.p_rev = min(0.25, P_REVERSAL * mess)
        self.p_bad = min(0.5, P_INVALID * mess)
        self.tmp = out / ".simulate-tmp"
        self.out = out
        self.ids_per = IDS_PER_HOUSEHOLD
        while self.ids_per <= self.T * MAX_IDS_PER_MONTH:
            self.ids_per *= 10
        if (cfg.households + 2) * self.ids_per >= 10**9:
            raise SimulateError("too many households for this many months: 结算单号 and "
                                "业务流水号 have 9 digits")
        self.regions = build_regions(cfg.households)
        # Villages at random, households numbered per village in roster order.
        villages = self.regions.villages
        vr = random.Random(f"fanpin-simulate:{cfg.seed}:villages")
        seq: dict[str, int] = {}
        self.hids: list[str] = []
        by_county: dict[str, list[int]] = {}
        for i in range(cfg.households):
            v = villages[int(vr.random() * len(villages))]
            seq[v] = seq.get(v, 0) + 1
            self.hids.append(f"{v}{seq[v]:04d}")
            by_county.setdefault(v[:6], []).append(i)
        self.chunks = [by_county[c] for c in sorted(by_county)]

    def tmp_path(self, kind: str, k: int, chunk: int) -> Path:
        return self.tmp / f"{kind}-{k:04d}-{chunk:05d}.txt"


@dataclass
class _ChunkResult:
    chunk: int
    roster: list[tuple[int, str]]
    truth: list[tuple[int, str]]
    roster_rows: int
    rows: dict[str, int]
    rev_counts: list[int]
    at_risk: int
    shocked: int


class _Chunk:
    """Simulates the households of one chunk (some counties) and writes their rows to
    the chunk's temporary month files."""

    def __init__(self, plan: _Plan, index: int) -> None:
        self.plan = plan
        self.index = index
        self.ids: set[str] = set()
        self.buffers: dict[str, list[list[str]]] = {k: [[] for _ in range(plan.M)]
                                                     for k in MONTHLY}
        self.buffered = 0
        self.roster: list[tuple[int, str]] = []
        self.truth: list[tuple[int, str]] = []
        self.roster_rows = 0
        self.rows = dict.fromkeys(MONTHLY, 0)
        self.rev_counts = [0] * (plan.M + 1)
        self.at_risk = 0
        self.shocked = 0

    def run(self) -> _ChunkResult:
        for i in self.plan.chunks[self.index]:
            self.household(i)
        self.flush()
        return _ChunkResult(self.index, self.roster, self.truth, self.roster_rows, self.rows,
                            self.rev_counts[: self.plan.M], self.at_risk, self.shocked)

    def flush(self) -> None:
        for kind, months in self.buffers.items():
            for k, lines in enumerate(months):
                if lines:
                    path = self.plan.tmp_path(kind, k, self.index)
                    with open(path, "a", encoding="utf-8", newline="") as f:
                        f.write("\n".join(lines))
                        f.write("\n")
                    lines.clear()
        self.buffered = 0

    # -- people

    def _person_id(self, rng: random.Random, county: str, birth: str, male: bool) -> str:
        while True:
            seq = int(rng.random() * 100)
            g = int(rng.random() * 5) * 2 + (1 if male else 0)
            first17 = f"{county}{birth}{seq:02d}{g}"
            idn = first17 + id_check(first17)
            if idn not in self.ids:
                self.ids.add(idn)
                return idn

    def _birth(self, rng: random.Random, age: int) -> str:
        y0, m0 = self.plan.cfg.start
        bm = 1 + int(rng.random() * 12)
        bd = 1 + int(rng.random() * 28)
        year = y0 - age - (1 if (bm, bd) > (m0, 1) else 0)
        return f"{year:04d}{bm:02d}{bd:02d}"

    # -- one household

    def household(self, i: int) -> None:  # noqa: C901 - one straight simulation
        plan = self.plan
        cfg = plan.cfg
        M, T = plan.M, plan.T
        seed_base = (cfg.seed * 1_000_003 + i) * 8
        hr = random.Random(seed_base + 1)  # the household itself
        mr = random.Random(seed_base + 2)  # its messiness
        srng = random.Random(seed_base + 3)  # its shock
        rnd = hr.random

        # ---- who
        htype = _pick(HOUSEHOLD_TYPES, TYPE_WEIGHTS, rnd())
        size = 1 + _index(SIZE_WEIGHTS, rnd())
        hid = plan.hids[i]
        village = hid[:12]
        county = hid[:6]
        monitored = htype == "监测户"

        rels: list[str] = []
        ages: list[int] = []
        if size == 1:
            rels.append("户主")
            ages.append(45 + int(rnd() * 41))
        else:
            head = 27 + int(rnd() * 46)
            rels += ["户主", "配偶"]
            ages += [head, max(20, head - 6 + int(rnd() * 11))]
            parents = {"父亲": False, "母亲": False}
            for _ in range(size - 2):
                if head <= 42 and rnd() < 0.3 and not all(parents.values()):
                    rel = "父亲" if not parents["父亲"] and (parents["母亲"] or rnd() < 0.5) \
                        else "母亲"
                    parents[rel] = True
                    rels.append(rel)
                    ages.append(head + 21 + int(rnd() * 11))
                else:
                    gap = 20 + int(rnd() * max(14, head - 37))
                    age = max(1, head - gap)
                    rels.append("子" if rnd() < 0.5 else "女")
                    ages.append(age)
        surname = SURNAMES[int(rnd() * len(SURNAMES))]
        names: list[str] = []
        idns: list[str] = []
        labour: list[str] = []
        for rel, age in zip(rels, ages, strict=True):
            fam = surname if rel in ("户主", "子", "女") else SURNAMES[int(rnd() * len(SURNAMES))]
            n_given = 1 if rnd() < 0.355 else 2
            names.append(fam + "".join(GIVEN[int(rnd() * len(GIVEN))] for _ in range(n_given)))
            male = rel in ("户主", "子", "父亲")
            idns.append(self._person_id(hr, county, self._birth(hr, age), male))
            if age < 16 or age >= 70:
                labour.append("无劳动力")
            elif age >= 60:
                labour.append("弱劳动力")
            else:
                r = rnd()
                labour.append(LABOUR[0] if r < 0.61 else LABOUR[1] if r < 0.89 else LABOUR[2])
        self.roster.append((i, "".join(
            f"{hid},{village},{htype},{size},{j + 1},{names[j]},{idns[j]},{rels[j]},"
            f"{labour[j]}\r\n" for j in range(size))))
        self.roster_rows += size

        # ---- income sources
        scale = plan.income_scale
        p_work = P_WORK_MONITORED if monitored else P_WORK
        workers: list[_Worker] = []
        for j in range(size):
            if labour[j] in WAGE_RANGE and rnd() < p_work:
                lo, hi = WAGE_RANGE[labour[j]]
                formal = rnd() < P_FORMAL
                r = rnd()
                place = PLACES[0] if r < PLACE_CUM[0] else PLACES[1] if r < PLACE_CUM[1] \
                    else PLACES[2]
                employer = EMPLOYERS[int(rnd() * len(EMPLOYERS))]
                workers.append(_Worker(j, (lo + (hi - lo) * rnd()) * scale, formal, place,
                                       employer, abroad=place == "省外"))
        business = ((150 + 700 * rnd()) if monitored else (250 + 1230 * rnd())) * scale
        prop = (10 + 110 * rnd()) * scale if rnd() < P_PROPERTY else 0.0
        n_old = sum(1 for a in ages if a >= 60)
        if not workers and rnd() < P_DIBAO:
            transfers = size * (520 + 480 * rnd()) * scale
        elif monitored:
            transfers = (size * (100 + 180 * rnd()) + PENSION * n_old) * scale
        else:
            transfers = (35 + 225 * rnd() + PENSION * n_old) * scale
        if cfg.poor_share is not None:
            workers, business, prop, transfers = _force_poverty(
                plan, i, size, workers, business, prop, transfers)

        # ---- shock
        shock = ""
        s_month = -1
        mix = cfg.mix
        p_shock = cfg.shock_rate * (mix["illness"] + mix["business"]
                                    + (mix["job"] / EARNER_SHARE if workers else 0.0))
        if srng.random() < p_shock:
            weights = (mix["illness"], mix["job"] / EARNER_SHARE if workers else 0.0,
                       mix["business"])
            shock = ("illness", "job", "business")[_index(weights, srng.random() * sum(weights))]
            lo, hi = plan.shock_months
            s_month = lo + int(srng.random() * (hi - lo + 1))
        # Illness: stays, chronic visits, the patient's lost earnings, business help lost.
        patient = -1
        stays: dict[int, float] = {}
        chronic = (-1, -1)
        biz_factor: dict[int, float] = {}
        ill_out = 0  # months an earning patient earns nothing
        if shock == "illness":
            patient = int(srng.random() * size)
            n_stays = 3 if srng.random() < 0.57 else 2
            for d in range(n_stays):
                stays[s_month + d] = 30000 + 80000 * srng.random()
            c0 = s_month + n_stays
            chronic = (c0, c0 + 8 + int(srng.random() * 5))
            ill_out = 4 + int(srng.random() * 9)
            if srng.random() < 0.5:
                f = 0.35 + 0.13 * srng.random()
                for d in range(6 + int(srng.random() * 5)):
                    biz_factor[s_month + d] = f
        elif shock == "job":
            first = int(srng.random() * len(workers))
            for wi in range(len(workers)):
                hit = wi == first or srng.random() < 0.5
                months_out = 5 + int(srng.random() * 8)
                register = srng.random() < 0.5
                if hit:
                    workers[wi].out_months = months_out
                    workers[wi].register = register
        elif shock == "business":
            for d in range(8 + int(srng.random() * 6)):
                biz_factor[s_month + d] = 0.25 * srng.random()

        # ---- month by month (hot: kept flat and local for speed)
        person = [f"{idns[j]},{names[j]}" for j in range(size)]
        assisted = htype != "一般农户"
        inc_cents = [0] * T
        oop_cents = [0] * T
        expected_first_year = 0.0
        med_buf = self.buffers["medical"]
        emp_buf = self.buffers["employment"]
        inc_buf = self.buffers["income"]
        slash = plan.slash
        p_late, p_dup, p_rev = plan.p_late, plan.p_dup, plan.p_rev
        p_rev_from = 1.0 - p_rev
        mrnd = mr.random
        counter = i * plan.ids_per  # 结算单号 and 业务流水号 share it, as in the sample
        n_med = n_emp = 0
        rev_counts = self.rev_counts
        inpatient_cut = P_INPATIENT
        chronic_cut = P_INPATIENT + P_CHRONIC
        C2 = _C2

        def settle(k: int, j: int, visit: str, t: int, stay_days: int) -> None:
            """One settlement of ``t`` cents in month ``k`` for member ``j``."""
            nonlocal counter, n_med
            counter += 1
            if visit == "住院":
                basic = int(t * (0.55 + 0.17 * rnd()) + 0.5)
                rest = t - basic
                crit = int((rest - CRITICAL_CENTS) * (0.30 + 0.25 * rnd()) + 0.5) \
                    if rest > CRITICAL_CENTS else 0
                assist = int((rest - crit) * (0.15 + 0.25 * rnd()) + 0.5) if assisted else 0
            else:
                basic = int(t * (0.40 + 0.20 * rnd()) + 0.5)
                crit = assist = 0
            oop = t - basic - crit - assist
            if k >= M:  # beyond the written span: only the truth needs it
                if mrnd() < p_rev:
                    return
                oop_cents[k] += oop
                return
            day = 1 + int(rnd() * 28)
            hospital = HOSPITALS[int(rnd() * 6)]
            late = mrnd() < p_late
            u = mrnd()
            rev = u >= p_rev_from
            if not rev:
                oop_cents[k] += oop
            f = k + 1 if late else k
            if f >= M:
                return
            sl = slash[k]
            adm = day - stay_days if day > stay_days else 1
            # Amounts as text: f"{c // 100}.{C2[c % 100]}" is twice as fast as :.2f.
            amounts = (f"{t // 100}.{C2[t % 100]},{basic // 100}.{C2[basic % 100]},"
                       f"{crit // 100}.{C2[crit % 100]},{assist // 100}.{C2[assist % 100]},"
                       f"{oop // 100}.{C2[oop % 100]}")
            line = (f"JS07{counter:09d},{person[j]},{county},{visit},{hospital},{sl}{C2[adm]},"
                    f"{sl}{C2[day]},{amounts},正常,")
            if u < p_dup:
                med_buf[f].append(line + _KEEP)
                med_buf[f].append(line + _KEEP)
                n_med += 2
            elif rev:
                med_buf[f].append(line + _KEEP)
                n_med += 1
                if f + 1 < M:
                    rday = 1 + int(mrnd() * 28)
                    negated = "-" + amounts.replace(",", ",-")
                    rev_counts[f + 1] += 1
                    med_buf[f + 1].append(
                        f"{_REV_ID},{person[j]},{county},{visit},{hospital},{sl}{C2[adm]},"
                        f"{slash[f + 1]}{C2[rday]},{negated},冲销,JS07{counter:09d}{_KEEP}")
                    n_med += 1
            else:
                med_buf[f].append(line)
                n_med += 1

        month_text = plan.month_text
        compact = plan.compact
        month_of = plan.month_of
        season = SEASON
        # Who has a visit in which month: geometric gaps between a person's visits (the
        # same as a coin per month, fewer draws); -1 marks the patient's shock months.
        visits: list[list[int]] = [[] for _ in range(T)]
        for j in range(size):
            log_q = _LOG_Q_OLD if ages[j] >= 60 else _LOG_Q_YOUNG
            k = -1
            while True:
                k += 1 + int(math.log(1.0 - rnd()) / log_q)
                if k >= T:
                    break
                visits[k].append(j)
        if patient >= 0:
            for k in range(T):
                if k in stays or chronic[0] <= k < chronic[1]:
                    visits[k].append(-1)
        for k in range(T):
            mo = month_of[k]
            emit = k < M
            # -- medical: ordinary visits, then the patient's stays and chronic visits
            for j in visits[k]:
                if j >= 0:
                    r = rnd()
                    if r < inpatient_cut:
                        total = math.exp(9.616 + 0.75 * hr.gauss(0.0, 1.0))
                        total = 3000.0 if total < 3000.0 else 60000.0 if total > 60000.0 else total
                        settle(k, j, "住院", int(total * 100 + 0.5), int(rnd() * 13))
                    else:
                        settle(k, j, "门诊慢特病" if r < chronic_cut else "普通门诊",
                               4000 + int(86000 * rnd()), 0)
                else:  # the patient's shock: stays, then chronic visits
                    j = patient
                    if k in stays:
                        settle(k, j, "住院", int(stays[k] * 100 + 0.5), int(srng.random() * 13))
                    if chronic[0] <= k < chronic[1]:
                        settle(k, j, "门诊慢特病", 60000 + int(190000 * srng.random()), 0)
            # -- work
            wage_sum = 0.0
            wage_expected = 0.0
            for w in workers:
                events: list[tuple[str, int, str]] | None = None
                if k == s_month:
                    if w.member == patient:
                        w.status, w.until = 2, k + ill_out
                    elif w.out_months:
                        w.status, w.until = 1, k + w.out_months
                        if w.formal:
                            events = [("解除劳动合同", 1 + int(rnd() * 10), "")]
                            if w.register:
                                events.append(("失业登记", 12 + int(rnd() * 15), ""))
                elif w.status and k >= w.until:
                    if w.status == 1 and w.formal:
                        events = [("就业登记", 2, "")]
                    w.status = 0
                factor = 0.0
                if w.status:
                    pass
                elif w.formal and k and rnd() < P_JOB_CHANGE:
                    others = [e for e in EMPLOYERS if e != w.employer]
                    w.employer = others[int(rnd() * len(others))]
                    events = [("解除劳动合同", 1 + int(rnd() * 10), ""),
                              ("就业登记", 20 + int(rnd() * 9), "")]
                    w.base *= 0.95 + 0.1 * rnd()
                else:
                    factor = 1.0
                    if mo == 12:
                        if rnd() < P_DEC_BONUS:
                            factor = 1.5 + rnd()
                    elif mo == 2 and w.abroad and rnd() < P_FEB_OFF:
                        factor = 0.0
                    if k == 0 and w.formal:
                        events = [("就业登记", 1, "")] + (events or [])
                if factor:
                    base = w.base * factor
                    wage = base * (0.93 + 0.14 * rnd())
                    wage_sum += wage
                    wage_expected += base
                    if w.formal:
                        if events is None:
                            events = []
                        c = int(wage * 100 + 0.5)
                        events.append(("工资发放", 15, f"{c // 100}.{C2[c % 100]}"))
                if events:
                    j = w.member
                    for kind, day, amount in events:
                        counter += 1
                        if emit:
                            emp_buf[k].append(
                                f"RS07{counter:09d},{person[j]},{village},{kind},"
                                f"{compact[k]}{C2[day]},{w.employer},{amount},{w.place}"
                                f"{'' if amount else _KEEP}")
                            n_emp += 1
            # -- the income report
            wages_c = int(wage_sum * (0.95 + 0.1 * rnd()) * 100 + 0.5)
            biz_expected = business * season[mo - 1]
            if k in biz_factor:
                biz_expected *= biz_factor[k]
            biz_c = int(biz_expected * (85 + 30 * rnd()) + 0.5)
            prop_c = int(prop * (95 + 10 * rnd()) + 0.5) if prop else 0
            tr_c = int(transfers * (95 + 10 * rnd()) + 0.5)
            total_c = wages_c + biz_c + prop_c + tr_c
            inc_cents[k] = total_c
            if k < 12:
                expected_first_year += wage_expected + biz_expected + prop + transfers
            if emit:
                inc_buf[k].append(
                    f"{hid},{village},{month_text[k]},{size},"
                    f"{wages_c // 100}.{C2[wages_c % 100]},{biz_c // 100}.{C2[biz_c % 100]},"
                    f"{prop_c // 100}.{C2[prop_c % 100]},{tr_c // 100}.{C2[tr_c % 100]},"
                    f"{total_c // 100}.{C2[total_c % 100]}")
        n_rows = self.rows
        n_rows["income"] += M
        n_rows["medical"] += n_med
        n_rows["employment"] += n_emp
        if counter >= (i + 1) * plan.ids_per:  # pragma: no cover - cannot happen
            raise SimulateError(f"household {hid} has too many settlements and events")

        # ---- truth
        pre = [0] * (T + 1)
        for k in range(T):
            pre[k + 1] = pre[k] + inc_cents[k] - oop_cents[k]
        first = -1
        for w0 in range(M):
            if pre[w0 + 12] - pre[w0] < plan.line_cents[w0] * size:
                first = w0
                break
        reason = ""
        if first >= 0:
            self.at_risk += 1
            if shock and first + 11 >= s_month:
                reason = SHOCKS[shock]
            else:
                reason = "其他" if workers else "缺劳动力"
        if shock:
            self.shocked += 1
        baseline = int(expected_first_year / size + 0.5)
        self.truth.append((i,
            f"{hid},{htype},{size},{1 if first >= 0 else 0},"
            f"{month_text[first] if first >= 0 else ''},{reason},"
            f"{SHOCKS[shock] if shock else '无'},{month_text[s_month] if shock else ''},"
            f"{baseline}\r\n"))
        self.buffered += 1
        if self.buffered >= 2000:
            self.flush()


def _force_poverty(plan: _Plan, i: int, size: int, workers: list[_Worker], business: float,
                   prop: float, transfers: float
                   ) -> tuple[list[_Worker], float, float, float]:
    """``--poor-share``: make this household poor all along with that probability (60 % of
    them with nobody earning wages, as 缺劳动力 households are; expected income per person
    a year at most 45-110 % of the first year's line), else make sure it is at least 30 %
    above the line. Wages, business, property and transfers are scaled alike."""
    cfg = plan.cfg
    assert cfg.poor_share is not None
    prng = random.Random((cfg.seed * 1_000_003 + i) * 8 + 4)
    line = monitoring_line(cfg.start[0])
    poor = prng.random() < cfg.poor_share
    if poor and workers and prng.random() < 0.6:
        workers = []
    annual = 12 * (sum(w.base for w in workers) + business + prop + transfers) / size
    if annual <= 0:
        return workers, business, prop, transfers
    if poor:
        k = min(1.0, line * (0.45 + 0.65 * prng.random()) / annual)
    else:
        k = max(1.0, line * (1.3 + 0.4 * prng.random()) / annual)
    for w in workers:
        w.base *= k
    return workers, business * k, prop * k, transfers * k


def _finish_month(plan: _Plan, kind: str, k: int, rev_base: int) -> list[tuple[str, int, str]]:
    """Write one month file from its chunks' temporary files: rows shuffled, reversals
    numbered from ``rev_base``, some rows made invalid; returns those (file, line, code)."""
    lines: list[str] = []
    for c in range(len(plan.chunks)):
        p = plan.tmp_path(kind, k, c)
        if p.exists():
            lines += p.read_text(encoding="utf-8").split("\n")[:-1]
            p.unlink()
    rng = random.Random(f"fanpin-simulate:{plan.cfg.seed}:{kind}:{k}")
    rng.shuffle(lines)
    rel = f"{kind}/{plan.month_text[k]}.csv"
    bad: list[tuple[str, int, str]] = []
    # Invalid rows: geometric gaps between candidates (a coin per row, fewer draws); kept
    # rows are skipped.
    log_keep = math.log(1.0 - plan.p_bad) if plan.p_bad > 0 else 0.0
    n = -1
    while log_keep:
        n += 1 + int(math.log(1.0 - rng.random()) / log_keep)
        if n >= len(lines):
            break
        if not lines[n].endswith(_KEEP):
            lines[n], code = _corrupt(kind, lines[n], rng)
            bad.append((rel, n + 2, code))
    text = "\r\n".join(lines).replace(_KEEP, "")
    if _REV_ID in text:
        parts = text.split(_REV_ID)
        numbered = [parts[0]]
        for r, part in enumerate(parts[1:], start=1):
            numbered.append(f"JS07{rev_base + r:09d}")
            numbered.append(part)
        text = "".join(numbered)
    folder = plan.out / kind
    with open(folder / f"{plan.month_text[k]}.csv", "w", encoding=ENCODINGS[kind],
              newline="") as f:
        f.write(HEADERS[kind] + "\r\n")
        if text:
            f.write(text + "\r\n")
    return bad


def _index(weights: tuple[float, ...], r: float) -> int:
    """The index whose cumulative weight first exceeds ``r`` (the last positive one if
    rounding leaves ``r`` at the top)."""
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if r < acc:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)


def _pick(items: tuple[str, ...], weights: tuple[float, ...], r: float) -> str:
    return items[_index(weights, r)]


# Worker processes get the plan once, through the pool's initializer.
_PLAN: _Plan | None = None


def _init_worker(plan: _Plan) -> None:
    global _PLAN
    _PLAN = plan
    # The CLI turns SIGTERM into KeyboardInterrupt; a worker should just stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _chunk_task(index: int) -> _ChunkResult:
    assert _PLAN is not None
    return _Chunk(_PLAN, index).run()


def _finish_task(args: tuple[str, int, int]) -> list[tuple[str, int, str]]:
    assert _PLAN is not None
    return _finish_month(_PLAN, *args)


# --------------------------------------------------------------------------------------
# Invalid rows, made as the sample makes them


def _bad_checksum(idn: str) -> str:
    right = id_check(idn[:17])
    return idn[:17] + ("1" if right == "0" else "0")


def _corrupt(kind: str, row: str, rng: random.Random) -> tuple[str, str]:
    f = row.split(",")
    r = int(rng.random() * (4 if kind != "medical" else 5))
    if kind == "income":
        if r == 0:
            f[8] = _fmt(_cents(f[8]) + 50000)
            code = "total_mismatch"
        elif r == 1:
            f[4] = "三千"
            code = "non_numeric_amount"
        elif r == 2:
            f[0] = f[0][:12] + "9999"
            code = "unknown_household"
        else:
            f[2] = "2026-00"
            code = "bad_month"
    elif kind == "medical":
        if r == 0:
            f[12] = _fmt(_cents(f[12]) + 12345)
            code = "amounts_do_not_add_up"
        elif r == 1:
            f[1] = _bad_checksum(f[1])
            code = "bad_id_checksum"
        elif r == 2:
            f[8] = ""
            code = "missing_total"
        elif r == 3:
            f[7] = "2026/13/45"
            code = "bad_date"
        else:
            for c in range(8, 13):
                f[c] = _neg(_cents(f[c]))
            code = "negative_without_reversal"
    else:
        if r == 0:
            f[7] = ""
            code = "wage_without_amount"
        elif r == 1:
            f[1] = _bad_checksum(f[1])
            code = "bad_id_checksum"
        elif r == 2:
            f[5] = "20261345"
            code = "bad_date"
        else:
            f[4] = "社保转移"
            code = "unknown_business_type"
    return ",".join(f), code


def _cents(text: str) -> int:
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    c = int(whole) * 100 + int((frac + "00")[:2])
    return -c if neg else c


# --------------------------------------------------------------------------------------
# Entry point


def simulate(out: Path, *, households: int, months: int = 24, seed: int = 1,
             start: str = "2024-11", mess: float = 1.0, shock_rate: float | None = None,
             mix: str | dict[str, float] | None = None, poor_share: float | None = None,
             force: bool = False, jobs: int | None = None, progress: bool = False) -> Summary:
    """Write a scenario folder to ``out``; returns a :class:`Summary`.

    ``jobs`` worker processes (default: the CPUs, at most 8; 1 runs in this process) share
    the work; the output does not depend on their number."""
    started = time.monotonic()
    if not 1 <= households <= MAX_HOUSEHOLDS:
        raise SimulateError(f"--households must be between 1 and {MAX_HOUSEHOLDS}")
    if months < 1:
        raise SimulateError("--months must be at least 1")
    if not mess >= 0 or math.isinf(mess):
        raise SimulateError("--mess must be 0 or more")
    rate = DEFAULT_SHOCK_RATE if shock_rate is None else shock_rate
    if not 0 <= rate <= 1:
        raise SimulateError("--shock-rate must be between 0 and 1")
    if poor_share is not None and not 0 <= poor_share <= 1:
        raise SimulateError("--poor-share must be between 0 and 1")
    the_mix = mix if isinstance(mix, dict) else parse_mix(mix)
    the_mix = {k: float(the_mix.get(k, 0.0)) for k in SHOCKS}
    if sum(the_mix.values()) <= 0:
        raise SimulateError("--mix: at least one weight must be positive")
    cfg = _Config(households, months, seed, parse_month(start), mess, rate, the_mix, poor_share)
    if cfg.start[0] * 12 + cfg.start[1] - 1 + months + EXTRA_MONTHS > 2099 * 12:
        raise SimulateError("the simulated months must end before 2100")
    plan = _Plan(cfg, out)
    prepare_output(out, force)
    plan.tmp.mkdir(parents=True, exist_ok=True)
    for kind in MONTHLY:
        (out / kind).mkdir(exist_ok=True)
    n_jobs = max(1, min(jobs or min(os.cpu_count() or 1, 8), len(plan.chunks)))
    if households < 2000:
        n_jobs = 1
    summary = Summary(households=households)
    roster: list[str] = [""] * households
    truth: list[str] = [""] * households
    rev_counts = [0] * months
    bar = _progress_bar(households, progress and households >= 2000)
    try:
        with _pool(n_jobs, plan) as pool:
            results = pool.imap_unordered(_chunk_task, range(len(plan.chunks))) if pool \
                else (_Chunk(plan, c).run() for c in range(len(plan.chunks)))
            for res in results:
                for i, text in res.roster:
                    roster[i] = text
                for i, text in res.truth:
                    truth[i] = text
                summary.roster_rows += res.roster_rows
                for kind, n in res.rows.items():
                    summary.rows[kind] += n
                for k, n in enumerate(res.rev_counts):
                    rev_counts[k] += n
                summary.at_risk += res.at_risk
                summary.shocked += res.shocked
                if bar is not None:
                    bar.update(len(plan.chunks[res.chunk]))
            # The month files: reversals numbered after every household's ids.
            rev_base = (households + 1) * plan.ids_per
            tasks: list[tuple[str, int, int]] = []
            for kind in MONTHLY:
                base = rev_base
                for k in range(months):
                    tasks.append((kind, k, base))
                    base += rev_counts[k] if kind == "medical" else 0
            finished = pool.imap(_finish_task, tasks) if pool \
                else (_finish_month(plan, *t) for t in tasks)
            bad = [b for month in finished for b in month]
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(plan.tmp, ignore_errors=True)
    with open(out / "roster.csv", "w", encoding="utf-8-sig", newline="") as f:
        f.write(ROSTER_HEADER + "\r\n" + "".join(roster))
    with open(out / "truth.csv", "w", encoding="utf-8", newline="") as f:
        f.write(TRUTH_HEADER + "\r\n" + "".join(truth))
    _write_text(out / "regions.csv", REGIONS_HEADER,
                (f"{c},{n},{lv}" for c, n, lv in plan.regions.rows), "utf-8-sig")
    y0 = cfg.start[0]
    y1 = plan.ym[-1][0]
    _write_text(out / "thresholds.csv", THRESHOLDS_HEADER,
                (f"{y},{monitoring_line(y)}" for y in range(y0 - 1, y1 + 2)), "utf-8")
    _write_text(out / "bad_rows.csv", BAD_ROWS_HEADER,
                (f"{f},{n},{code}" for f, n, code in bad), "utf-8")
    summary.invalid = len(bad)
    summary.seconds = time.monotonic() - started
    return summary


@contextlib.contextmanager
def _pool(n_jobs: int, plan: _Plan) -> Iterator[Any]:
    """A process pool with the plan in every worker, or None to work in this process."""
    if n_jobs <= 1:
        global _PLAN
        _PLAN = plan
        try:
            yield None
        finally:
            _PLAN = None
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ctx.Pool(n_jobs, initializer=_init_worker, initargs=(plan,))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def _progress_bar(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="households", unit="hh", file=sys.stderr, mininterval=0.5,
                disable=None)


__all__ = ["SimulateError", "Summary", "build_regions", "id_check", "monitoring_line",
           "parse_mix", "simulate"]
