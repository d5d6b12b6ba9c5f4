"""Department feed parsers: pure functions from department files to events and rejects.

``FORMATS`` maps each feed to its format: a parser module, or for the two reference
files a module object defined in ``producers.reference``. Each offers ``DEPARTMENT``,
``COLUMNS``, ``ENCODING``, ``parse_row(row, origin, ctx)`` and
``parse_file(path, rel, ctx)`` (see :class:`producers.common.FileFormat`).
"""

from types import ModuleType

from producers import employment, income, medical, reference, roster
from producers.common import FileError, FileFormat, ParseContext, Reject

#: Every module here satisfies :class:`FileFormat`.
FORMATS: dict[str, ModuleType] = {
    "regions": reference.regions,
    "thresholds": reference.thresholds,
    "roster": roster,
    "income": income,
    "medical": medical,
    "employment": employment,
}

__all__ = ["FORMATS", "FileError", "FileFormat", "ParseContext", "Reject", "feed_of"]


def feed_of(module: object) -> str:
    """The feed name (a key of ``FORMATS``) of a format module."""
    for name, fmt in FORMATS.items():
        if fmt is module:
            return name
    raise KeyError(f"{module!r} is not a department format")

# Checked by mypy: each format really offers the FileFormat interface.
_TYPED: tuple[FileFormat, ...] = (
    reference.regions,
    reference.thresholds,
    roster,
    income,
    medical,
    employment,
)
