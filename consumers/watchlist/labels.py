"""The words on the watch-list pages, in Chinese (the default) and English.

Duty officers read Chinese; English is for developers and reviewers. Stored values (states,
risk types, severities, household types) stay Chinese in the database and in URLs; only
their display changes with the language.
"""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["zh", "en"]
LANGS: Final[tuple[Lang, ...]] = ("zh", "en")
DEFAULT_LANG: Final[Lang] = "zh"

LABELS: Final[dict[Lang, dict[str, str]]] = {
    "zh": {
        "title": "防返贫监测预警清单",
        "detail_title": "预警详情",
        "switch_lang": "English",
        "counts": "各状态数量",
        "total": "合计",
        "filters": "筛选",
        "region_prefix": "行政区划代码（前缀）",
        "region_placeholder": "如 990122",
        "risk_type": "风险类型",
        "severity": "严重程度",
        "state": "状态",
        "overdue": "逾期",
        "overdue_only": "仅看逾期",
        "not_overdue": "未逾期",
        "any": "全部",
        "apply": "查询",
        "reset": "重置",
        "export": "导出 CSV",
        "household_id": "户编号",
        "region_code": "行政区划代码",
        "household_type": "户类型",
        "risk_types": "风险类型",
        "main_risk_type": "主要风险类型",
        "rules": "预警规则",
        "first_month": "预警月份",
        "last_month": "最近预警月份",
        "alert_count": "预警次数",
        "episode": "预警轮次",
        "created_at": "首次接收",
        "updated_at": "最近更新",
        "days_open": "已过天数",
        "days_since": "已过 {days} 天",
        "rule_version": "规则版本",
        "no_entries": "没有符合条件的预警。",
        "page": "第 {page} / {pages} 页，共 {total} 条",
        "prev": "上一页",
        "next": "下一页",
        "back": "返回清单",
        "reasons": "预警原因",
        "rule": "规则",
        "detail": "说明",
        "evidence": "测算依据",
        "evidence_month": "依据月份",
        "monitoring_line": "监测线（元/人·年）",
        "line_year": "监测线年度",
        "household_size": "家庭人口数",
        "projected_income_12m": "12个月测算窗口家庭纯收入（已报加预计，元）",
        "rigid_spending_12m": "窗口内刚性支出：三重保障后个人自付（元）",
        "projected_per_capita": "预计人均纯收入（扣除刚性支出，元/年）",
        "baseline_income_12m": "近12个月已报家庭纯收入（元）",
        "months_of_history": "收入记录月数",
        "below_line": "低于监测线",
        "sources": "来源数据行",
        "dept": "部门",
        "file": "文件",
        "line": "行号",
        "alerts": "收到的预警",
        "alert_id": "预警编号",
        "month": "数据月份",
        "received_at": "接收时间",
        "history": "处理记录",
        "at": "时间",
        "actor": "操作人",
        "action": "操作",
        "old_value": "原值",
        "new_value": "新值",
        "deadline_note": "应在首次预警后 15 天内完成识别纳入。",
        "time_zone_note": "时间为北京时间。",
        "colon": "：",
        "not_found": "未找到该预警。",
        "read_only_note": "本页面只读；核实、纳入等操作将在后续版本提供。",
    },
    "en": {
        "title": "Poverty-relapse early-warning watch list",
        "detail_title": "Warning details",
        "switch_lang": "中文",
        "counts": "Entries by state",
        "total": "Total",
        "filters": "Filters",
        "region_prefix": "Region code (prefix)",
        "region_placeholder": "e.g. 990122",
        "risk_type": "Risk type",
        "severity": "Severity",
        "state": "State",
        "overdue": "Overdue",
        "overdue_only": "Overdue only",
        "not_overdue": "Not overdue",
        "any": "Any",
        "apply": "Search",
        "reset": "Reset",
        "export": "Export CSV",
        "household_id": "Household",
        "region_code": "Region code",
        "household_type": "Household type",
        "risk_types": "Risk types",
        "main_risk_type": "Main risk type",
        "rules": "Rules",
        "first_month": "First warned",
        "last_month": "Last warned",
        "alert_count": "Alerts",
        "episode": "Episode",
        "created_at": "First received",
        "updated_at": "Last updated",
        "days_open": "Days open",
        "days_since": "{days} days ago",
        "rule_version": "Rule version",
        "no_entries": "No warnings match.",
        "page": "Page {page} of {pages}, {total} entries",
        "prev": "Previous",
        "next": "Next",
        "back": "Back to the list",
        "reasons": "Reasons",
        "rule": "Rule",
        "detail": "Detail",
        "evidence": "Evidence",
        "evidence_month": "Evidence month",
        "monitoring_line": "Monitoring line (yuan per person per year)",
        "line_year": "Line year",
        "household_size": "Household size",
        "projected_income_12m": "Household net income in the 12-month window, reported + forecast",
        "rigid_spending_12m": "Rigid spending: out-of-pocket after all insurance (yuan)",
        "projected_per_capita": "Projected per-capita income after rigid spending (yuan/year)",
        "baseline_income_12m": "Reported household net income, last 12 months (yuan)",
        "months_of_history": "Months of income history",
        "below_line": "below the line",
        "sources": "Source rows",
        "dept": "Department",
        "file": "File",
        "line": "Line",
        "alerts": "Alerts received",
        "alert_id": "Alert id",
        "month": "Data month",
        "received_at": "Received",
        "history": "History",
        "at": "Time",
        "actor": "Actor",
        "action": "Action",
        "old_value": "Old value",
        "new_value": "New value",
        "deadline_note": "Identification is due within 15 days of the first warning.",
        "time_zone_note": "Times are Beijing time.",
        "colon": ": ",
        "not_found": "No such warning.",
        "read_only_note": "This page is read-only; verification steps come in a later version.",
    },
}

# English names for stored Chinese values. Unknown values are shown as stored.
VALUES_EN: Final[dict[str, str]] = {
    # states
    "新预警": "New",
    "已接收": "Accepted",
    "核实中": "Verifying",
    "已纳入监测": "Under monitoring",
    "核实排除": "Ruled out",
    "帮扶中": "Being assisted",
    "风险消除": "Risk eliminated",
    # severities
    "高": "High",
    "中": "Medium",
    "低": "Low",
    # household types
    "脱贫户": "Lifted out of poverty",
    "一般农户": "Ordinary rural",
    "监测户": "Monitored",
    # risk types
    "因病": "Illness",
    "因残": "Disability",
    "因学": "Schooling",
    "因自然灾害": "Natural disaster",
    "因意外事故": "Accident",
    "因产业项目失败": "Failed farm/business project",
    "因务工就业不稳": "Unstable employment",
    "缺劳动力": "Lack of labour",
    "因安全住房": "Unsafe housing",
    "因安全饮水": "Unsafe drinking water",
    "其他": "Other",
    # departments (Origin.dept)
    "statistics": "Statistics bureau",
    "rural": "Rural revitalisation bureau",
    "medical": "Medical insurance bureau",
    "employment": "Human resources and social security bureau",
    # history actions
    "created": "Created",
    "alert merged": "Alert merged",
    "severity raised": "Severity raised",
    "state changed": "State changed",
}

VALUES_ZH: Final[dict[str, str]] = {
    "statistics": "统计局",
    "rural": "乡村振兴局",
    "medical": "医保局",
    "employment": "人社局",
    "created": "新建预警",
    "alert merged": "合并新预警",
    "severity raised": "严重程度提高",
    "state changed": "状态变更",
    "system": "系统",
}


def parse_lang(value: str | None) -> Lang:
    return "en" if value == "en" else DEFAULT_LANG


def label(lang: Lang, key: str) -> str:
    return LABELS[lang].get(key, LABELS[DEFAULT_LANG].get(key, key))


def value_label(lang: Lang, value: str | None) -> str:
    """The display name of a stored value (a state, risk type, department...)."""
    if value is None:
        return ""
    table = VALUES_EN if lang == "en" else VALUES_ZH
    return table.get(value, value)
