"""Tests of opto_cube.figures.report: the self-contained HTML page.

The page is built from real results (synthetic sessions converted, opened as a
catalog, responses, maps and figures computed with today's API), rendered,
parsed with the standard library's HTML parser and checked part by part:
sections, inline SVG figures, the summary table against the catalog, no
external reference, the parameters and versions, escaping of hostile text. A
headless Chromium renders it when Chromium is installed (skipped otherwise).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers import REPORT_SECTIONS, html_table, page_sections, parse_html, responding_units
from hypothesis import given
from hypothesis import strategies as st

from opto_cube import schema
from opto_cube.errors import OptoCubeError
from opto_cube.figures import report
from opto_cube.jobs import report_job
from opto_cube.store import catalog

HOSTILE = '<script>alert("x")</script>&<b>'
EXTERNAL = re.compile(r"""(?:\bsrc|\bhref)\s*=\s*["']?\s*(?!#|data:image/png;base64,)[^"'\s>]|url\(\s*["']?(?!#)""")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def real(tiny_dataset) -> dict:
    """The catalog of three tiny converted sessions, the ReportContent of the report job and the rendered page."""
    cat = catalog.open_catalog(tiny_dataset.out)
    content = report_job.report_content(cat, title="Tiny catalog", n_boot=100)
    page = report.render_report(content)
    root, errors, doctype = parse_html(page)
    yield {"catalog": cat, "content": content, "page": page, "root": root, "errors": errors, "doctype": doctype}
    plt.close("all")


def _figure(title: str = "t", n: int = 50) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.arange(n), np.sin(np.arange(n) / 5.0), "o-", ms=2)
    ax.set_title(title)
    return fig


def _section_texts(root) -> dict[str, str]:
    return {s.attrs["id"]: s.find_all("h2")[0].text() for s in root.find_all("section")}


# --------------------------------------------------------------------------
# The page of real results
# --------------------------------------------------------------------------
def test_page_parses_with_every_section(real: dict) -> None:
    root, content = real["root"], real["content"]
    assert real["doctype"].lower() == "doctype html"
    assert real["errors"] == []  # every element closed where it was opened
    headings = list(_section_texts(root).values())
    assert headings == ["Sessions", *REPORT_SECTIONS, "Parameters and versions"]
    nav = [a.text() for a in root.find_all("nav")[0].find_all("a")]
    assert nav == headings
    ids = {s.attrs["id"] for s in root.find_all("section")}
    assert {a.attrs["href"][1:] for a in root.find_all("nav")[0].find_all("a")} == ids
    assert root.find_all("title")[0].text() == content.title == root.find_all("h1")[0].text()
    assert root.find_all("meta", name="viewport"), "not readable on a phone without the viewport"


def test_every_figure_is_inline_svg(real: dict) -> None:
    root, content = real["root"], real["content"]
    expected = sum(len(s.figures) for s in content.sections)
    figures = root.find_all("figure")
    assert len(figures) == expected >= 6  # 3 maps, 2 of the spatial extent, 1 PSTH (tiny: 2 powers, no p50 fit)
    for number, fig in enumerate(figures, start=1):
        (svg,) = [c for c in fig.children if c.tag == "svg"]
        assert svg.attrs.get("viewbox"), "an SVG without a viewBox does not scale on a phone"
        assert not svg.find_all("text"), "text must be drawn as paths (svg.fonttype = path): no font needed"
        assert len(svg.find_all("path")) > 10
        assert fig.find_all("figcaption")[0].text().startswith(f"Figure {number}.")
    assert not root.find_all("img")


def test_summary_table_is_the_catalog(real: dict) -> None:
    root, cat = real["root"], real["catalog"]
    (section,) = root.find_all("section", id="summary")
    (table,) = section.find_all("table")
    header, rows = html_table(table)
    assert len(rows) == len(cat) == 3
    expected = cat.summary()
    assert header == [*expected.columns, schema.REPORT_SUMMARY_RESPONDING]
    assert [r[0] for r in rows] == list(cat.sessions)
    for row, (_, want) in zip(rows, expected.iterrows(), strict=True):
        assert row[header.index("clusters")] == str(want["clusters"])
        assert row[header.index("trials")] == str(want["trials"])
        assert row[header.index("qc_pass")] == str(want["qc_pass"])
    # the responding units, counted again from the cubes' own responses
    counts = [responding_units(cat[row[0]], row[0]) for row in rows]
    assert [row[header.index(schema.REPORT_SUMMARY_RESPONDING)] for row in rows] == [str(n) for n in counts]
    assert sum(counts) > 0


def test_section_tables_carry_units(real: dict) -> None:
    table = page_sections(real["root"])["Spatial extent"].find_all("table")[0]
    units = {th.parts[0]: th.find_all("span")[0].text() if th.find_all("span") else "" for th in table.find_all("th")}
    assert units[schema.POWER] == "mW"
    assert units[schema.EXTENT_RADIUS] == units[schema.EXTENT_RADIUS_LOW] == "um"
    assert units[schema.EXTENT_N_UNITS] == "count"
    assert units[schema.EXTENT_AT_EMITTER] == ""  # units "1" are not shown
    extent = real["content"].sections[1].tables[0].data
    assert len(table.find_all("tbody")[0].find_all("tr")) == extent[schema.EXTENT_RADIUS].size


def test_parameters_and_versions_present(real: dict) -> None:
    root, content = real["root"], real["content"]
    params = root.find_all("table", class_="parameters")[0]
    shown = {tr.find_all("td")[0].text(): tr.find_all("td")[1].text() for tr in params.find_all("tr")[1:]}
    assert shown == {k: report._value(v) for k, v in content.parameters.items()}
    assert shown["significance_p"] == str(schema.SIGNIFICANCE_P)
    versions = root.find_all("table", class_="versions")[0]
    shown = {tr.find_all("td")[0].text(): tr.find_all("td")[1].text() for tr in versions.find_all("tr")[1:]}
    assert shown["opto_cube"] == report.installed_versions()["opto_cube"]
    assert set(schema.REPORT_VERSION_PACKAGES) <= set(shown)
    assert shown["numpy"] == np.__version__


def test_no_external_reference(real: dict) -> None:
    page = real["page"]
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "http" not in page  # not even a namespace URI or a matplotlib credit
    assert "//" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=\s]*", "", page)
    for bad in ("<link", "<script", "@import", "@font-face", "<iframe", "<object"):
        assert bad not in page.lower()
    root = real["root"]
    for node in root.iter():
        for name, value in node.attrs.items():
            if name in ("src", "href", "xlink:href"):
                assert value.startswith(("#", "data:image/png;base64,")), (node.tag, name, value)


def test_svg_ids_unique_and_references_resolve(real: dict) -> None:
    root = real["root"]
    ids = [n.attrs["id"] for n in root.iter() if "id" in n.attrs]
    assert len(ids) == len(set(ids)), "ids repeat across figures"
    refs = [v[1:] for n in root.iter() for k, v in n.attrs.items() if k in ("href", "xlink:href") and v[:1] == "#"]
    refs += re.findall(r"url\(#([^)]+)\)", real["page"])
    assert refs
    assert set(refs) <= set(ids)


# --------------------------------------------------------------------------
# Escaping, figures, tables
# --------------------------------------------------------------------------
def test_hostile_text_is_escaped_everywhere() -> None:
    fig = _figure(title=HOSTILE)
    summary = pd.DataFrame({"session": [HOSTILE, "ok"], "clusters": [1, 2]})
    content = report.ReportContent(
        HOSTILE,
        summary,
        [report.Section(HOSTILE, HOSTILE, [report.FigureItem(fig, HOSTILE)], [report.TableItem(summary, HOSTILE)])],
        parameters={HOSTILE: HOSTILE},
        intro=HOSTILE,
    )
    page = report.render_report(content)
    plt.close(fig)
    assert "<script" not in page
    assert "<b>" not in page.replace("<b>Figure 1.</b>", "")
    root, errors, _ = parse_html(page)
    assert errors == []
    assert not root.find_all("script")
    assert [b.text() for b in root.find_all("b")] == ["Figure 1."]  # the figcaption's own <b> only
    cells = [td.text() for td in root.find_all("td")]
    assert cells.count(HOSTILE) == 4  # two summary cells, the parameter's name and value
    assert root.find_all("title")[0].text() == HOSTILE
    assert HOSTILE in [p.text() for p in root.find_all("p")]


@pytest.mark.slow
@given(text=st.text(min_size=1, max_size=40).filter(lambda s: s.strip()))
def test_any_text_round_trips_as_text(text: str) -> None:
    """Whatever a session id or caption holds, the page shows it as text: parsing gives it back, adds no tag."""
    text = text.replace("\x00", "").replace("\r", "")  # HTML parsers normalise these; not data opto_cube writes
    if not text.strip():
        return
    summary = pd.DataFrame({"session": [text]})
    content = report.ReportContent("t", summary, [report.Section(text)], parameters={"p": text})
    root, errors, _ = parse_html(report.render_report(content))
    assert errors == []
    (section,) = [s for s in root.find_all("section") if s.attrs["id"] not in ("summary", "parameters")]
    assert section.find_all("h2")[0].text() == text
    assert root.find_all("table", class_="summary")[0].find_all("td")[0].text() == text
    assert root.find_all("table", class_="parameters")[0].find_all("td")[1].text() == text
    tags = {n.tag for n in root.iter()}
    assert tags <= {
        "#document",
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "main",
        "header",
        "h1",
        "p",
        "nav",
        "ol",
        "li",
        "a",
        "section",
        "h2",
        "div",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "span",
    }


def test_links_out_of_a_figure_are_dropped() -> None:
    fig = _figure()
    fig.axes[0].lines[0].set_url("https://example.org/track")
    fig.axes[0].imshow(np.arange(12.0).reshape(3, 4), extent=(0, 10, -1, 1))  # a raster inside the SVG
    kind, html = report.figure_to_html(fig, prefix="z-")
    plt.close(fig)
    assert kind == "svg"
    assert "example.org" not in html
    assert "http" not in html
    assert re.search(r'xlink:href="data:image/png;base64,', html), "the raster stays, as a data URI"
    assert not EXTERNAL.search(html)


def test_same_figure_same_bytes_and_ids_prefixed() -> None:
    fig = _figure()
    first, second = report.figure_to_html(fig, prefix="a-"), report.figure_to_html(fig, prefix="a-")
    other = report.figure_to_html(fig, prefix="b-")[1]
    plt.close(fig)
    assert first == second
    ids = re.findall(r'\bid="([^"]+)"', first[1])
    assert ids
    assert all(i.startswith("a-") for i in ids)
    assert not set(ids) & set(re.findall(r'\bid="([^"]+)"', other))


def _many_lines(n_lines: int = 200, n: int = 100) -> plt.Figure:
    """Many light artists: no single one worth rasterizing, a heavy SVG together."""
    fig, ax = plt.subplots(figsize=(3, 2))
    for k in range(n_lines):
        ax.plot(np.arange(n), np.sin(np.arange(n) / 5.0 + k), lw=0.5)
    return fig


def test_heavy_scatter_is_rasterized_inside_the_svg() -> None:
    fig = _figure(n=5000)  # one line of 5000 markers
    kind, html = report.figure_to_html(fig, prefix="h-")
    again = report.figure_to_html(fig, prefix="h-")
    vector = report.figure_to_html(fig, prefix="h-", rasterize_points=10**9)
    assert not fig.axes[0].lines[0].get_rasterized(), "the figure is left as it was"
    plt.close(fig)
    assert (kind, html) == again  # deterministic, raster included
    assert kind == "mixed"
    assert vector[0] == "svg"
    root = parse_html(html)[0]
    (image,) = root.find_all("image")
    head, data = image.attrs["xlink:href"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(data).startswith(PNG_SIGNATURE)
    assert not root.find_all("text")
    assert len(root.find_all("path")) > 10
    assert len(html) < len(vector[1]) / 3


def test_heavy_figure_becomes_png() -> None:
    fig = _many_lines()
    kind, html = report.figure_to_html(fig, max_svg_bytes=50_000, alt="a <caption>")
    plt.close(fig)
    assert kind == "png"
    (node,) = parse_html(html)[0].find_all("img")
    assert node.attrs["alt"] == "a <caption>"
    head, data = node.attrs["src"].split(",", 1)
    assert head == "data:image/png;base64"
    png = base64.b64decode(data)
    assert png.startswith(PNG_SIGNATURE)
    image = plt.imread(io.BytesIO(png))
    assert image.std() > 0.01


def test_render_picks_svg_mixed_or_png_per_figure() -> None:
    figures = [_figure(n=20), _figure(n=5000), _many_lines()]
    section = report.Section("Figures", figures=figures)
    page = report.render_report(
        report.ReportContent("t", pd.DataFrame({"session": ["a"]}), [section]), max_svg_bytes=60_000
    )
    for fig in figures:
        plt.close(fig)
    assert re.findall(r'<figure class="(\w+)">', page) == ["svg", "mixed", "png"]
    assert not EXTERNAL.search(page)


def test_table_rows_of_dataset_and_dataframe() -> None:
    ds = xr.Dataset(
        {
            "radius_um": (("effect", "power_mw"), [[120.0, np.nan], [1 / 3, 2e6]], {"units": "um"}),
            "ok": (("effect", "power_mw"), [[True, False], [True, True]]),
        },
        coords={"effect": ["activated", "inactivated"], "power_mw": ("power_mw", [1.0, 4.0], {"units": "mW"})},
    )
    columns, units, rows, n = report.table_rows(ds)
    assert columns == ["effect", "power_mw", "radius_um", "ok"]
    assert units == ["", "mW", "um", ""]
    assert n == 4
    expected = [
        [e, f"{p:.4g}", "NaN" if np.isnan(r) else f"{r:.4g}", "yes" if o else "no"]
        for e, p, r, o in (
            (e, p, ds.radius_um.sel(effect=e, power_mw=p).item(), bool(ds.ok.sel(effect=e, power_mw=p)))
            for e in ds.effect.values
            for p in ds.power_mw.values
        )
    ]
    assert rows == expected
    frame = pd.DataFrame({"distance_um": np.arange(10.0), "n": np.arange(10)})
    frame.attrs["units"] = {"distance_um": "um"}
    columns, units, rows, n = report.table_rows(frame, max_rows=3)
    assert (columns, units, n, len(rows)) == (["distance_um", "n"], ["um", ""], 10, 3)
    assert report.table_rows(frame, units={"n": "count"})[1] == ["um", "count"]
    da = ds.radius_um
    assert report.table_rows(da)[0] == ["effect", "power_mw", "radius_um"]


def test_truncated_table_says_so() -> None:
    frame = pd.DataFrame({"x": np.arange(30)})
    content = report.ReportContent(
        "t", pd.DataFrame({"session": ["a"]}), [report.Section("S", tables=[report.TableItem(frame, "X", max_rows=5)])]
    )
    root = parse_html(report.render_report(content))[0]
    (section,) = root.find_all("section", id="s")
    assert len(section.find_all("tbody")[0].find_all("tr")) == 5
    assert "first 5 of 30 rows" in section.text()


def test_template_is_package_data() -> None:
    template = resources.files("opto_cube.figures") / "templates" / schema.REPORT_TEMPLATE
    assert template.is_file()
    assert report._environment().get_template(schema.REPORT_TEMPLATE).filename.endswith(schema.REPORT_TEMPLATE)
    assert report._environment().autoescape is True  # escaping is the environment's, not left to the template


# --------------------------------------------------------------------------
# Writing: atomic, size guard, bad input
# --------------------------------------------------------------------------
def test_write_report_atomic_and_complete(tmp_path: Path) -> None:
    fig = _figure()
    content = report.ReportContent("t", pd.DataFrame({"session": ["a"]}), [report.Section("S", figures=[fig])])
    out = report.write_report(content, tmp_path / "new" / "report.html")
    plt.close(fig)
    assert out == tmp_path / "new" / "report.html"
    assert out.read_text(encoding="utf-8") == report.render_report(content)
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    assert out.stat().st_mode & 0o044, "the page is readable by others, as any file the umask allows"


def test_failed_render_leaves_the_old_report(tmp_path: Path) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    fig = _figure()
    fig.savefig = broken
    target = tmp_path / "report.html"
    target.write_text("old report", encoding="utf-8")
    content = report.ReportContent("t", pd.DataFrame({"session": ["a"]}), [report.Section("S", figures=[fig])])
    with pytest.raises(RuntimeError, match="drawing failed"):
        report.write_report(content, target)
    plt.close(fig)
    assert target.read_text(encoding="utf-8") == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "fsync", no_space)
    target = tmp_path / "report.html"
    with pytest.raises(OptoCubeError, match=r"report\.html: cannot write the report \(No space left on device\)"):
        report.write_report(report.ReportContent("t", pd.DataFrame({"session": ["a"]})), target)
    assert list(tmp_path.iterdir()) == []


def test_heavy_page_is_written_and_warned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "REPORT_MAX_BYTES", 1000)
    with pytest.warns(report.ReportSizeWarning, match=r"report\.html: the report weighs .* MB, over"):
        out = report.write_report(report.ReportContent("t", pd.DataFrame({"session": ["a"]})), tmp_path / "report.html")
    assert out.stat().st_size > 1000


def test_light_page_is_not_warned(tmp_path: Path, no_warnings: None) -> None:
    report.write_report(report.ReportContent("t", pd.DataFrame({"session": ["a"]})), tmp_path / "report.html")


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: report.Section(""), ValueError, "non-empty heading"),
        (lambda: report.Section("S", figures=["figure.png"]), TypeError, "section 'S': a figure must be a matplotlib"),
        (lambda: report.ReportContent("t", [["a"]]), TypeError, "summary must be a pandas DataFrame, got list"),
        (lambda: report.ReportContent("t", pd.DataFrame(), ["S"]), TypeError, "must be Section objects, got str"),
        (lambda: report.render_report({"title": "t"}), TypeError, "takes a ReportContent, got dict"),
        (lambda: report.table_rows([1, 2]), TypeError, "DataFrame or an xarray Dataset, got list"),
    ],
)
def test_bad_input(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


def test_folder_as_target(tmp_path: Path) -> None:
    with pytest.raises(OptoCubeError, match=r"is a folder; give the report's file name"):
        report.write_report(report.ReportContent("t", pd.DataFrame({"session": ["a"]})), tmp_path)


# --------------------------------------------------------------------------
# In a real browser
# --------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # --no-sandbox: tests may run as root (containers); the page holds no script anyway
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={cwd / 'profile'}",
    ]
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [1200, 390])  # a desktop and a phone
def test_chromium_renders_the_page(real: dict, tmp_path: Path, width: int) -> None:
    page = report.write_report(real["content"], tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    done = _chromium(f"--window-size={width},2400", f"--screenshot={shot}", page.as_uri(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    image = plt.imread(shot)
    assert image.shape[1] == width
    ink = (image[..., :3] < 0.9).any(axis=-1)  # anything not (near) white
    assert ink.mean() > 0.02, "the screenshot is blank"
    assert ink[:, : width // 2].any(), "the page is drawn in one half only"
    assert ink[:, width // 2 :].any(), "the page is drawn in one half only"
    dom = _chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    root = parse_html(dom.stdout)[0]
    assert [s.find_all("h2")[0].text() for s in root.find_all("section")][1:-1] == list(REPORT_SECTIONS)
    assert len(root.find_all("svg")) == sum(len(s.figures) for s in real["content"].sections)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_prints_the_page(real: dict, tmp_path: Path) -> None:
    page = report.write_report(real["content"], tmp_path / "report.html")
    pdf = tmp_path / "report.pdf"
    done = _chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2  # the figures and tables flow over pages
