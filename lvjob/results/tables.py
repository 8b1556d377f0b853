"""Result tables as plain data, rendered to Markdown, CSV and LaTeX (booktabs).

A cell is a value (str, int, float) or a `Mark` saying why a value is not there ("missing: run
failed", "partial: step 12/60"). Marks are printed as their text in every format, so a missing
input is visible in the table, never dropped or shown as zero.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Mark:
    text: str

    def __str__(self) -> str:
        return self.text


Cell = Union[str, int, float, Mark, None]


@dataclass(frozen=True)
class Table:
    name: str  # file stem, e.g. table3_forecast_error
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    formats: tuple[str, ...] = ()  # per column: a format spec for numbers (".4g", ".3e", ".1%", ",d")
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.name}: row {row} has {len(row)} cells for {len(self.columns)} columns")


def cell_text(value: Cell, spec: str = "") -> str:
    if value is None:
        return "missing"
    if isinstance(value, (Mark, str)):
        return str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if spec else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _texts(table: Table) -> list[list[str]]:
    specs = table.formats or ("",) * len(table.columns)
    return [[cell_text(v, s) for v, s in zip(row, specs)] for row in table.rows]


def to_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |",
             "|---|" + "---:|" * (len(table.columns) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in _texts(table)]
    if table.notes:
        lines += [""] + list(table.notes)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Raw numbers (full precision) for analysis; marks as their text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["missing" if v is None else str(v) if isinstance(v, Mark) else v for v in row])
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def to_latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    align = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
             rf"\label{{tab:{table.name}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in _texts(table)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
