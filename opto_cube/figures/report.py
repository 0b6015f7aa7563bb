"""One self-contained HTML page of a catalog's results, to mail or archive.

Rendering only: this module computes no science. The caller (the
``opto-cube report`` job) computes the catalog summary, the maps, the spatial
extent, the PSTHs and draws their matplotlib figures; it gathers them in a
:class:`ReportContent` and :func:`write_report` turns that into one HTML file.

The page fetches nothing from elsewhere: figures are inline SVG (text drawn as
paths, ``svg.fonttype = "path"``, so no font is needed; metadata, comments and
any link out of the figure removed) or, when an SVG would be too heavy, a PNG
data URI; the CSS is inline; there is no script. Every text from the data
(session ids, captions, parameter values) is HTML-escaped by the template
(Jinja2, autoescape on). What the page holds is described in ``docs/report.md``.

Examples
--------
>>> import pandas as pd
>>> summary = pd.DataFrame({"session": ["s1", "s2"], "clusters": [60, 58]})
>>> content = ReportContent("Demo", summary, parameters={"bin_ms": 10})
>>> page = render_report(content)
>>> page.startswith("<!DOCTYPE html>"), '<td class="text">s2</td>' in page
(True, True)
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import math
import os
import re
import sys
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from opto_cube import __version__, schema
from opto_cube.errors import OptoCubeError, OptoCubeWarning

REPORT_MAX_SVG_BYTES = 1_500_000  # a heavier figure is embedded as a PNG instead of inline SVG
REPORT_RASTERIZE_POINTS = 2_000  # a line or collection of this many points is drawn as an image inside the SVG
REPORT_RASTER_DPI = 150  # of rasterized artists and PNG figures
REPORT_MAX_TABLE_ROWS = 500  # rows shown of a section's table (the summary shows every session)
REPORT_SIGNIFICANT_DIGITS = 4
REPORT_SVG_HASHSALT = "opto_cube"  # fixed: the same figure gives the same SVG bytes

__all__ = [
    "FigureItem",
    "ReportContent",
    "ReportSizeWarning",
    "Section",
    "TableItem",
    "figure_to_html",
    "installed_versions",
    "render_report",
    "table_rows",
    "write_report",
]


class ReportSizeWarning(OptoCubeWarning):
    """The rendered page is heavier than :data:`opto_cube.schema.REPORT_MAX_BYTES` (too big to mail)."""


# --------------------------------------------------------------------------
# What a page holds
# --------------------------------------------------------------------------
@dataclass
class FigureItem:
    """A matplotlib figure of a section, with an optional caption.

    Parameters
    ----------
    figure
        A :class:`matplotlib.figure.Figure` (for instance ``ax.figure`` of an
        :mod:`opto_cube.figures.plot` function's result).
    caption
        Plain text shown under the figure (escaped), and its ``alt`` text when
        the figure is embedded as a PNG.
    """

    figure: Any
    caption: str = ""


@dataclass
class TableItem:
    """A table of a section: a DataFrame, an xarray Dataset or DataArray, with an optional caption.

    Parameters
    ----------
    data
        A :class:`pandas.DataFrame`, or an :class:`xarray.Dataset` /
        :class:`xarray.DataArray` (flattened: one row per combination of its
        dimensions' labels, the labels as leading columns).
    caption
        Plain text shown above the table (escaped).
    units
        Column name -> units, shown under the column's name. By default the
        ``attrs["units"]`` of the Dataset's variables and coordinates, or a
        DataFrame's ``attrs["units"]`` mapping. ``"1"`` and ``""`` are not shown.
    max_rows
        Rows shown at most; the caption then says how many were left out.
    """

    data: Any
    caption: str = ""
    units: Mapping[str, str] | None = None
    max_rows: int = REPORT_MAX_TABLE_ROWS


@dataclass
class Section:
    """One section of the page: a heading, plain text, figures and tables.

    Parameters
    ----------
    heading
        The section's title (also its entry in the page's table of contents).
    text
        Plain text; blank lines separate paragraphs. Escaped, never interpreted as HTML.
    figures
        :class:`FigureItem` s, or bare matplotlib figures (no caption).
    tables
        :class:`TableItem` s, or bare DataFrames / Datasets (no caption).
    """

    heading: str
    text: str = ""
    figures: Sequence[Any] = ()
    tables: Sequence[Any] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.heading, str) or not self.heading.strip():
            raise ValueError(f"a report section needs a non-empty heading, got {self.heading!r}")
        self.figures = [f if isinstance(f, FigureItem) else FigureItem(f) for f in self.figures]
        self.tables = [t if isinstance(t, TableItem) else TableItem(t) for t in self.tables]
        for item in self.figures:
            if not hasattr(item.figure, "savefig"):
                raise TypeError(
                    f"section {self.heading!r}: a figure must be a matplotlib Figure, got {type(item.figure).__name__}"
                )


def installed_versions() -> dict[str, str]:
    """The versions of Python, opto_cube and the libraries that made the results.

    Examples
    --------
    >>> versions = installed_versions()
    >>> list(versions)[:2]
    ['opto_cube', 'python']
    """
    out = {"opto_cube": __version__, "python": sys.version.split()[0]}
    for name in schema.REPORT_VERSION_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class ReportContent:
    """Everything the page shows, already computed.

    Parameters
    ----------
    title
        The page's title.
    summary
        The catalog's summary table, one row per session (for instance
        :meth:`opto_cube.Catalog.summary` joined with units / responding units).
    sections
        The sections, in page order (maps, spatial extent, power response, PSTHs, ...).
    parameters
        The parameters the results were computed with (name -> value; values are
        shown as JSON when not plain text).
    versions
        Package -> version; by default :func:`installed_versions`.
    intro
        Plain text shown under the title.
    generated
        When the page was made (shown in its header); by default now, UTC.

    Examples
    --------
    >>> import pandas as pd
    >>> content = ReportContent("t", pd.DataFrame({"session": ["a"]}))
    >>> content.versions["opto_cube"] == installed_versions()["opto_cube"]
    True
    """

    title: str
    summary: pd.DataFrame
    sections: Sequence[Section] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=installed_versions)
    intro: str = ""
    generated: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if not isinstance(self.summary, pd.DataFrame):
            raise TypeError(f"the report's summary must be a pandas DataFrame, got {type(self.summary).__name__}")
        self.sections = list(self.sections)
        for section in self.sections:
            if not isinstance(section, Section):
                raise TypeError(f"report sections must be Section objects, got {type(section).__name__}")


# --------------------------------------------------------------------------
# Figures -> inline SVG (or a PNG data URI)
# --------------------------------------------------------------------------
_XML_PROLOGUE = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_METADATA = re.compile(r"<metadata\b.*?</metadata>", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_ID = re.compile(r'\bid="([^"]+)"')
_HREF = re.compile(r'\s+(?:xlink:)?href="([^"]*)"')
_URL = re.compile(r"url\(\s*([^)]*?)\s*\)")
_FORBIDDEN = re.compile(r"<\s*(?:script|foreignObject|iframe|object|embed)\b|\son\w+\s*=", re.IGNORECASE)
_SVG_OPEN = re.compile(r"<svg\b")


def _scour_svg(svg: str, prefix: str) -> str:
    """matplotlib's SVG made fit to inline in HTML: no prologue, metadata, comment or link out; ids prefixed."""
    svg = _XML_PROLOGUE.sub("", svg)
    svg = _METADATA.sub("", svg)
    svg = _COMMENT.sub("", svg)
    svg = _XMLNS.sub("", svg)  # the HTML parser puts <svg> in the SVG namespace (and knows xlink:href)
    ids = set(_ID.findall(svg))

    def href(m: re.Match[str]) -> str:
        target = m.group(1)
        if target.startswith("#") and target[1:] in ids:
            return f' xlink:href="#{prefix}{target[1:]}"'
        if target.startswith("data:image/png;base64,"):
            return m.group(0)
        return ""  # a link out of the page (Artist.set_url) or to nothing: dropped

    def url(m: re.Match[str]) -> str:
        target = m.group(1).strip("'\"")
        return f"url(#{prefix}{target[1:]})" if target.startswith("#") and target[1:] in ids else "none"

    svg = _HREF.sub(href, svg)
    svg = _URL.sub(url, svg)
    svg = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    # links out dropped: the <a> wrappers matplotlib draws for Artist.set_url are harmless groups now
    if _FORBIDDEN.search(svg):  # matplotlib never writes these; refuse rather than embed them
        raise ValueError("the figure's SVG holds a script, an event handler or embedded content")
    svg = _SVG_OPEN.sub('<svg role="img"', svg, count=1)
    return svg.strip()


def _n_points(artist: Any) -> int:
    """How many markers, vertices or cells ``artist`` draws (what makes its SVG heavy)."""
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D

    if isinstance(artist, Line2D):
        return int(np.size(artist.get_xdata(orig=False)))
    if isinstance(artist, Collection):
        offsets = int(np.shape(artist.get_offsets())[0])
        array = artist.get_array()
        paths = artist.get_paths()
        vertices = sum(int(np.shape(p.vertices)[0]) for p in paths) if len(paths) < 10_000 else 10_000
        return max(offsets, vertices, 0 if array is None else int(np.size(array)))
    return 0


def _heavy_artists(figure: Any, min_points: int) -> list[Any]:
    """The lines and collections of ``figure`` that draw at least ``min_points`` points, not yet rasterized."""
    return [
        artist
        for ax in figure.axes
        for artist in (*ax.lines, *ax.collections)
        if not artist.get_rasterized() and _n_points(artist) >= min_points
    ]


def _svg(figure: Any, prefix: str, dpi: int) -> str:
    import matplotlib as mpl

    buffer = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "path", "svg.hashsalt": REPORT_SVG_HASHSALT}):
        figure.savefig(buffer, format="svg", dpi=dpi, metadata={"Date": None}, bbox_inches="tight", pad_inches=0.05)
    return _scour_svg(buffer.getvalue(), prefix)


def figure_to_html(
    figure: Any,
    *,
    prefix: str = "f0-",
    max_svg_bytes: int = REPORT_MAX_SVG_BYTES,
    rasterize_points: int = REPORT_RASTERIZE_POINTS,
    dpi: int = REPORT_RASTER_DPI,
    alt: str = "",
) -> tuple[str, str]:
    """A matplotlib figure as self-contained HTML: inline SVG, or a PNG data URI when the SVG is too heavy.

    The figure is cropped to what it draws (``bbox_inches="tight"``: no label
    cut off). The SVG draws text as paths (``svg.fonttype = "path"``: no font
    needed), has a fixed hash salt (the same figure gives the same bytes) and
    its ids prefixed by ``prefix`` (several figures on one page); metadata,
    comments and links out of the figure are removed.

    A line or collection of at least ``rasterize_points`` points (a scatter of
    thousands of units) is drawn as an image inside the SVG at ``dpi``, axes
    and text staying vector (kind ``"mixed"``). A figure whose SVG still
    exceeds ``max_svg_bytes`` is embedded whole as a PNG at ``dpi``. The
    figure's artists are left as they were.

    Parameters
    ----------
    figure
        A matplotlib Figure. It is not closed.
    prefix
        Prefix of the SVG's element ids, unique on the page.
    max_svg_bytes
        Largest inline SVG, bytes.
    rasterize_points
        Artists drawing this many points or more are rasterized inside the SVG.
    dpi
        Resolution of rasterized artists and of the PNG fallback.
    alt
        ``alt`` text of the PNG fallback.

    Returns
    -------
    kind : str
        ``"svg"`` (all vector), ``"mixed"`` (heavy artists rasterized inside the SVG) or ``"png"``.
    html : str
        The ``<svg>`` element, or an ``<img>`` with a data URI (``alt`` escaped).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots(figsize=(2, 2))
    >>> _ = ax.plot([0, 1], [1, 0]); _ = ax.set_title("a < b")
    >>> kind, html = figure_to_html(fig, prefix="x-")
    >>> kind, html.startswith("<svg"), "http" in html, "<text" in html
    ('svg', True, False, False)
    >>> figure_to_html(fig, rasterize_points=2)[0]
    'mixed'
    >>> figure_to_html(fig, max_svg_bytes=100)[0]
    'png'
    >>> plt.close(fig)
    """
    from markupsafe import escape

    heavy = _heavy_artists(figure, rasterize_points)
    try:
        for artist in heavy:
            artist.set_rasterized(True)
        svg = _svg(figure, prefix, dpi)
    finally:
        for artist in heavy:
            artist.set_rasterized(False)
    if len(svg.encode()) <= max_svg_bytes:
        return ("mixed" if heavy else "svg"), svg
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.05)
    data = base64.b64encode(png.getvalue()).decode("ascii")
    return "png", f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


# --------------------------------------------------------------------------
# Tables -> header, units and rows of strings
# --------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        return f"{v:.{REPORT_SIGNIFICANT_DIGITS}g}"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def table_rows(
    data: Any, units: Mapping[str, str] | None = None, max_rows: int = REPORT_MAX_TABLE_ROWS
) -> tuple[list[str], list[str], list[list[str]], int]:
    """A DataFrame or xarray object as the strings of an HTML table.

    Parameters
    ----------
    data
        A DataFrame (its index is dropped unless named), or an xarray Dataset or
        DataArray (flattened; its dimension labels become the leading columns).
    units
        Column -> units; by default from the variables' ``attrs["units"]``
        (xarray) or the DataFrame's ``attrs["units"]``.
    max_rows
        Rows kept at most.

    Returns
    -------
    columns, units, rows, n_rows
        Column names, each column's units (``""`` when none or ``"1"``), the
        rows as strings (floats to 4 significant digits, booleans yes / no),
        and the number of rows before truncation.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"radius_um": ("power_mw", [120.0, 251.5], {"units": "um"})},
    ...                 coords={"power_mw": ("power_mw", [1.0, 4.0], {"units": "mW"})})
    >>> table_rows(ds)
    (['power_mw', 'radius_um'], ['mW', 'um'], [['1', '120'], ['4', '251.5']], 2)
    """
    return _rows(*_frame(data, units), max_rows)


def _rows(
    frame: pd.DataFrame, found: Mapping[str, str], max_rows: int
) -> tuple[list[str], list[str], list[list[str]], int]:
    columns = [str(c) for c in frame.columns]
    shown_units = [found.get(c, "") if found.get(c, "") not in ("1", "") else "" for c in columns]
    rows = [[_cell(v) for v in row] for row in frame.head(max_rows).itertuples(index=False, name=None)]
    return columns, shown_units, rows, len(frame)


def _frame(data: Any, units: Mapping[str, str] | None) -> tuple[pd.DataFrame, dict[str, str]]:
    """``data`` as a flat DataFrame, and column -> units."""
    import xarray as xr

    found: dict[str, str] = {}
    if isinstance(data, xr.DataArray):
        data = data.to_dataset(name=data.name if data.name is not None else "value")
    if isinstance(data, xr.Dataset):
        found = {str(k): str(v.attrs.get("units", "")) for k, v in data.variables.items()}
        if data.dims:
            frame = data.to_dataframe().reset_index()
        else:
            frame = pd.DataFrame({k: [v.values.item()] for k, v in data.data_vars.items()})
    elif isinstance(data, pd.DataFrame):
        found = {str(k): str(v) for k, v in dict(data.attrs.get("units", {}) or {}).items()}
        frame = data.reset_index() if any(n is not None for n in data.index.names) else data
    else:
        raise TypeError(f"a report table must be a DataFrame or an xarray Dataset, got {type(data).__name__}")
    found.update(units or {})
    return frame, found


# --------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("opto_cube.figures", "templates"),
        autoescape=True,  # every value is escaped unless the template marks it safe (only our own SVG)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _anchor(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}-{k}"
    used.add(name)
    return name


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text or "") if p.strip()]


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=_cell, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _table(item: TableItem) -> dict[str, Any]:
    frame, found = _frame(item.data, item.units)
    columns, units, rows, n_rows = _rows(frame, found, item.max_rows)
    numeric = [pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in frame.dtypes]
    return {
        "caption": item.caption,
        "columns": list(zip(columns, units, numeric, strict=True)),
        "rows": rows,
        "n_rows": n_rows,
        "truncated": n_rows > len(rows),
    }


def render_report(content: ReportContent, *, max_svg_bytes: int = REPORT_MAX_SVG_BYTES) -> str:
    """The page of ``content`` as one self-contained HTML document.

    Parameters
    ----------
    content
        What to show.
    max_svg_bytes
        A figure whose SVG is heavier is embedded as a PNG (:func:`figure_to_html`).

    Returns
    -------
    str
        The HTML document. Figures are not closed (close them when done).

    Examples
    --------
    >>> import pandas as pd
    >>> hostile = pd.DataFrame({"session": ["<script>alert(1)</script>"]})
    >>> page = render_report(ReportContent("Report", hostile, sections=[Section("Maps", "a < b")]))
    >>> "<script>" in page, "&lt;script&gt;" in page, 'id="maps"' in page
    (False, True, True)
    """
    if not isinstance(content, ReportContent):
        raise TypeError(f"render_report takes a ReportContent, got {type(content).__name__}")
    used = {"summary", "parameters"}
    sections, n_figure = [], 0
    for section in content.sections:
        figures = []
        for item in section.figures:
            n_figure += 1
            kind, html = figure_to_html(
                item.figure, prefix=f"f{n_figure}-", max_svg_bytes=max_svg_bytes, alt=item.caption or section.heading
            )
            figures.append({"kind": kind, "html": html, "caption": item.caption, "number": n_figure})
        sections.append(
            {
                "heading": section.heading,
                "anchor": _anchor(section.heading, used),
                "paragraphs": _paragraphs(section.text),
                "figures": figures,
                "tables": [_table(t) for t in section.tables],
            }
        )
    template = _environment().get_template(schema.REPORT_TEMPLATE)
    return template.render(
        title=content.title,
        intro=_paragraphs(content.intro),
        generated=content.generated,
        summary=_table(TableItem(content.summary, max_rows=max(len(content.summary), 1))),
        n_sessions=len(content.summary),
        sections=sections,
        parameters=[(str(k), _value(v)) for k, v in content.parameters.items()],
        versions=[(str(k), str(v)) for k, v in content.versions.items()],
        generator=str(content.versions.get("opto_cube", __version__)),
    )


def write_report(
    content: ReportContent | str, path: str | os.PathLike, *, max_svg_bytes: int = REPORT_MAX_SVG_BYTES
) -> Path:
    """Render ``content`` and write it to ``path`` atomically.

    The page is rendered in memory first, written to a temporary file beside
    ``path`` and renamed over it: on any error nothing is left at ``path``
    (an older report there stays as it was). A page over
    :data:`opto_cube.schema.REPORT_MAX_BYTES` is written but warned about
    (:class:`ReportSizeWarning`).

    Parameters
    ----------
    content
        A :class:`ReportContent`, or a page already rendered by :func:`render_report`.
    path
        The HTML file to write; its folder is created if needed.
    max_svg_bytes
        See :func:`render_report`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OptoCubeError
        ``path`` is a folder or cannot be written (one line naming it).

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = write_report(ReportContent("t", pd.DataFrame({"session": ["a"]})), Path(tmp) / "r.html")
    ...     out.read_text(encoding="utf-8").count("<table")
    2
    """
    path = Path(path)
    if path.is_dir():
        raise OptoCubeError(f"{path}: is a folder; give the report's file name (for instance {path / 'report.html'})")
    page = content if isinstance(content, str) else render_report(content, max_svg_bytes=max_svg_bytes)
    data = page.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OptoCubeError(f"{path}: cannot write the report ({e.strerror or e})") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if len(data) > schema.REPORT_MAX_BYTES:
        warnings.warn(
            f"{path}: the report weighs {len(data) / 1e6:.1f} MB, over {schema.REPORT_MAX_BYTES / 1e6:g} MB "
            "(too heavy to mail); draw fewer or lighter figures",
            ReportSizeWarning,
            stacklevel=2,
        )
    return path
