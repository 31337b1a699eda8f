"""A report rendered: CSV, a chart (PNG), a standalone HTML document and a PDF.

- **CSV**: one file for every table, its first column ``section`` naming the
  table (``summary``, ``timing``, ``priority``, ``site``, ``rules``,
  ``targets``, ``bandwidth``, ``wan``, ``anomalies``). Each section starts with
  its header row (``section`` then the table's column names), then its rows; a
  table Prometheus could not fill has one row with its reason. Figures are
  plain numbers a spreadsheet sorts and sums (``report_tables(plain=True)``:
  seconds, fractions, bytes; an empty cell for none). Alert names and targets
  are untrusted: control and format characters (bidi overrides and isolates,
  zero-width characters, C0 and C1 controls) are removed as from
  notifications (:func:`ai_sidecar.sanitize.strip_controls`; a line feed
  stays, in a quoted cell), then a cell that a spreadsheet would run as a
  formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
  return, after any blanks) is prefixed with ``'``. As a download or a file
  it is UTF-8 after a byte-order mark (:data:`SPREADSHEET_ENCODING`).
- **PDF** (fpdf2, with matplotlib's DejaVu Sans embedded: Latin, Greek,
  Cyrillic and more print; a character the font lacks is left blank, never an
  error): the chart, then every table. Control and format characters are
  replaced and long cells cut, so untrusted text cannot break the layout.
- **HTML**: Jinja2 with autoescaping (:mod:`ai_sidecar.console.templating`'s
  environment), the chart inline as a ``data:`` image.

HTML and PDF are in the language asked for (the console page's, or the
config's ``language`` for the CLI and the digest); the CSV stays English, its
section keys and column names read by programs and spreadsheets alike.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import logging
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel.dates import format_date

from ai_sidecar import __version__
from ai_sidecar.console.reports.model import Report
from ai_sidecar.console.reports.tables import Table, period_title, report_tables
from ai_sidecar.console.templating import environment
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator, translator
from ai_sidecar.models import PRIORITIES
from ai_sidecar.notify.wording import Wording
from ai_sidecar.sanitize import strip_controls

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("ai_sidecar.reports")

# Excel reads a CSV without a byte-order mark in the machine's legacy code page
# (Windows-1252 in France), so "débit" shows as "dÃ©bit"; after one it reads UTF-8.
SPREADSHEET_ENCODING = "utf-8-sig"
# A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Longest cell text the PDF prints; longer text is cut with an ellipsis.
PDF_CELL_CHARS = 120
PRIORITY_COLOURS = ("#b3261e", "#e8710a", "#f9ab00", "#5f6368")


def spreadsheet_safe(cell: str) -> str:
    # Blanks first too: spreadsheets that trim them on import run what follows.
    return "'" + cell if cell.lstrip().startswith(_FORMULA_START) else cell


def csv_cell(text: str) -> str:
    """``text`` as the CSV holds it: invisible characters gone, then made inert.

    In that order: a bidi override before ``=`` would hide the formula from the check."""
    return spreadsheet_safe(strip_controls(text))


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for table in report_tables(report, plain=True):
        writer.writerow(["section", *table.columns])
        if table.unavailable is not None:
            writer.writerow([table.key, csv_cell(table.unavailable)])
            continue
        for row in table.rows:
            writer.writerow([table.key, *(csv_cell(cell) for cell in row)])
    return out.getvalue()


def chart_png(report: Report, language: str = SOURCE_LANGUAGE) -> bytes:
    """Incidents created per hour (a day's report) or per day, stacked by priority, its
    words and day names in ``language``."""
    buffer = io.BytesIO()
    chart_figure(report, language).savefig(buffer, format="png")
    return buffer.getvalue()


def chart_figure(report: Report, language: str = SOURCE_LANGUAGE) -> Figure:
    """:func:`chart_png`'s figure, laid out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 2.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(report.buckets)))
    bottoms = [0] * len(positions)
    for index, priority in enumerate(PRIORITIES):
        heights = [bucket.counts[index] for bucket in report.buckets]
        axes.bar(positions, heights, bottom=bottoms, color=PRIORITY_COLOURS[index], label=priority)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    hourly = report.period.kind == "day"
    t = translator(language, "console")
    labels = [_bucket_label(b.start, hourly, t) for b in report.buckets]
    every = max(1, len(labels) // 12)
    axes.set_xticks(positions[::every], labels[::every], fontsize=8)
    axes.set_ylabel(t.gettext("Incidents"), fontsize=8)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.tick_params(axis="y", labelsize=8)
    # Above the plot, not in it: inside, a corner sits over the first or the newest
    # bar, and the newest (today, the storm) is often the tallest.
    axes.legend(
        fontsize=7,
        ncols=4,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        borderaxespad=0.2,
        frameon=False,
    )
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    return figure


def _bucket_label(start: datetime, hourly: bool, t: Translator) -> str:
    """``14:00`` or ``Mon 02``; another language names its days (fr: ``lun. 2``)."""
    if hourly or t.is_source:
        return start.strftime("%H:%M" if hourly else "%a %d")
    return format_date(start, "EEE d", locale=t.locale)


def template_context(
    report: Report, chart: bytes, chart_src: str | None = None, language: str = SOURCE_LANGUAGE
) -> dict[str, Any]:
    """What report templates (console page, document, e-mail) are rendered with, in
    ``language``; the chart inline as a ``data:`` URL unless ``chart_src`` says where it
    is (an e-mail's ``cid:``)."""
    t = translator(language, "console")
    return {
        "report": report,
        "period": report.period,
        "period_title": period_title(report.period, t),
        "tables": report_tables(report, t),
        "chart": chart_src or "data:image/png;base64," + base64.b64encode(chart).decode(),
        "generated": local_time(report.generated_at, report, language),
    }


def local_time(moment: datetime, report: Report, language: str = SOURCE_LANGUAGE) -> str:
    """``moment`` to the second in the report's zone, as the console writes times in
    ``language``: ``2026-12-05 22:09:27 CET``, ``5 déc. 2026, 22:09:27 CET``."""
    return Wording(report.period.zone, language).time(moment)


def report_html(
    report: Report, chart: bytes, chart_src: str | None = None, language: str = SOURCE_LANGUAGE
) -> str:
    """A standalone HTML document (the CLI's and the e-mail's) in ``language``: no
    external resource."""
    return (
        environment(language)
        .get_template("report_document.html")
        .render(**template_context(report, chart, chart_src, language))
    )


def _printable(text: str) -> str:
    """``text`` with control and format characters (NUL, bidi overrides) replaced and
    cut to :data:`PDF_CELL_CHARS`."""
    clean = "".join(
        "\ufffd" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") else c for c in text
    )
    return clean if len(clean) <= PDF_CELL_CHARS else clean[: PDF_CELL_CHARS - 1] + "…"


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def report_pdf(report: Report, chart: bytes, language: str = SOURCE_LANGUAGE) -> bytes:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    t = translator(language, "console")
    title = period_title(report.period, t)

    pdf = FPDF(format="A4")
    pdf.set_title(_printable(t.gettext("Scout report: {title}").format(title=title)))
    pdf.set_creator(f"Scout sidecar {__version__}")
    fonts = _font_dir()
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(text=t.gettext("Scout report"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 10)
    pdf.cell(text=_printable(title), new_x="LMARGIN", new_y="NEXT")
    made = t.gettext("Made {time}").format(time=local_time(report.generated_at, report, language))
    pdf.cell(text=made, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.image(io.BytesIO(chart), w=pdf.epw)
    for table in report_tables(report, t):
        _pdf_table(pdf, table, FontFace(emphasis="BOLD", fill_color=(230, 230, 230)), t)
    body = bytes(pdf.output())
    if any(getattr(font, "missing_glyphs", None) for font in pdf.fonts.values()):
        _missing_glyphs_noted()
    return body


@functools.cache
def _missing_glyphs_noted() -> None:
    """Said once per process, naming no character: they come from alert text, and
    fpdf's own warning (quieted, see exporter.common.logs) quotes them at each PDF."""
    log.warning(
        "the PDF font has no glyph for some characters of a report (CJK, emoji); they print"
        " blank. Said once."
    )


def _pdf_table(pdf: Any, table: Table, headings: Any, t: Translator) -> None:
    pdf.ln(4)
    pdf.set_font("DejaVu", "B", 12)
    pdf.cell(text=table.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9)
    if table.note:
        pdf.multi_cell(w=0, text=table.note, new_x="LMARGIN", new_y="NEXT")
    if table.unavailable is not None:
        pdf.multi_cell(w=0, text=_printable(table.unavailable), new_x="LMARGIN", new_y="NEXT")
        return
    if not table.rows:
        pdf.cell(text=t.gettext("None in this period."), new_x="LMARGIN", new_y="NEXT")
        return
    with pdf.table(
        headings_style=headings, text_align="LEFT", line_height=5, wrapmode="CHAR"
    ) as grid:
        for row in (table.columns, *table.rows):
            cells = grid.row()
            for cell in row:
                cells.cell(_printable(cell))
