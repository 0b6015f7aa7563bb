"""The report job: :func:`opto_cube.jobs.report_job.run_report` / ``report_content`` and ``opto-cube report``.

The page is built from real converted sessions (the shared tiny dataset), parsed
with the stdlib HTML parser, and each part checked against an independent
computation: the sessions and their responding units from the cubes' own
responses, the spatial extent table from :func:`opto_cube.analysis.spatial.spatial_extent`
of the responses table, the figure count from what each analysis could fit.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from helpers import REPORT_SECTIONS, html_table, page_sections, parse_html, responding_units

from opto_cube import cli, schema, synth
from opto_cube.analysis import power_response, spatial
from opto_cube.errors import OptoCubeError
from opto_cube.figures import report
from opto_cube.jobs import pipeline, report_job, tasks
from opto_cube.store.catalog import Catalog, open_catalog

N_BOOT = 100  # the bootstrap's size does not change what the page holds; keep the tests quick
HEADINGS = ["Sessions", *REPORT_SECTIONS, "Parameters and versions"]


def _parse(path: Path) -> tuple:
    root, errors, doctype = parse_html(path.read_text(encoding="utf-8"))
    assert doctype.lower() == "doctype html"
    assert errors == []
    return root, page_sections(root)


def _paragraphs(section) -> list[str]:
    return [p.text() for p in section.find_all("p")]


@pytest.fixture(scope="module")
def job(tiny_dataset, tmp_path_factory) -> dict:
    """run_report on the three tiny sessions, the page parsed, the independent results beside it."""
    cat = open_catalog(tiny_dataset.out)
    out = tmp_path_factory.mktemp("report") / "report.html"
    before = plt.get_fignums()
    page = report_job.run_report(cat, out, n_boot=N_BOOT)
    open_after = plt.get_fignums()
    table = pipeline.responses_table(cat)
    root, sections = _parse(page)
    return {
        "catalog": cat,
        "page": page,
        "root": root,
        "sections": sections,
        "table": table,
        "figures_left_open": sorted(set(open_after) - set(before)),
    }


# --------------------------------------------------------------------------
# The page of run_report
# --------------------------------------------------------------------------
def test_run_report_writes_one_complete_page(job: dict) -> None:
    page = job["page"]
    assert page.name == "report.html"
    assert sorted(p.name for p in page.parent.iterdir()) == ["report.html"]  # nothing temporary left
    assert list(job["sections"]) == HEADINGS
    assert [a.text() for a in job["root"].find_all("nav")[0].find_all("a")] == HEADINGS
    assert job["root"].find_all("h1")[0].text() == f"opto_cube report: {len(job['catalog'])} sessions"
    assert job["figures_left_open"] == [], "run_report must close the figures it drew"
    assert page.stat().st_size < schema.REPORT_MAX_BYTES


def test_figures_per_section_follow_what_could_be_fitted(job: dict) -> None:
    table, sections = job["table"], job["sections"]
    fits = power_response.power_response(table)
    expected = {
        "Effect maps": 3 + (schema.LATENCY in table),  # effect map, depth, modulation index (, latency)
        "Spatial extent": 2,  # profiles, radius against power
        "Power response": 2 if fits[schema.PR_FIT_OK].any() else 0,  # example curves, p50 against distance
        "Population PSTHs near the emitter": 1,
    }
    for heading, n in expected.items():
        figures = sections[heading].find_all("figure")
        assert len(figures) == n, heading
        for figure in figures:
            assert next(c.tag for c in figure.children) == "svg"
    numbers = [f.find_all("figcaption")[0].text() for f in job["root"].find_all("figure")]
    assert [int(re.match(r"Figure (\d+)\.", t).group(1)) for t in numbers] == list(range(1, len(numbers) + 1))
    assert not job["root"].find_all("img")


def test_summary_rows_are_the_sessions_with_their_responding_units(job: dict) -> None:
    cat = job["catalog"]
    header, rows = html_table(job["sections"]["Sessions"].find_all("table")[0])
    assert header == [*cat.summary().columns, schema.REPORT_SUMMARY_RESPONDING]
    assert [r[0] for r in rows] == list(cat.sessions)
    for row in rows:
        cube = cat[row[0]]
        assert row[header.index("clusters")] == str(cube.sizes[schema.CLUSTER])
        assert row[header.index("qc_pass")] == str(int(cube[schema.QC_PASS].values.sum()))
        assert row[header.index(schema.REPORT_SUMMARY_RESPONDING)] == str(responding_units(cube, row[0]))


def test_extent_table_is_the_spatial_extent_of_the_table(job: dict) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extent = spatial.spatial_extent(job["table"], n_boot=N_BOOT, seed=0)
    section = job["sections"]["Spatial extent"]
    shown = _paragraphs(section)
    for w in caught:  # every warning of the analysis is shown as text (tiny sessions: groups without responders)
        assert " ".join(str(w.message).split()) in shown
    header, rows = html_table(section.find_all("table")[0])
    assert header[:3] == [schema.WAVEFORM_TYPE, schema.EXTENT_EFFECT, schema.POWER]
    levels = schema.power_levels(job["table"][schema.POWER].to_numpy())[1]
    assert len(rows) == len(schema.WAVEFORM_TYPES) * len(schema.EFFECTS) * levels.size
    for row in rows:
        at = {schema.WAVEFORM_TYPE: row[0], schema.EXTENT_EFFECT: row[1]}
        cell = extent.sel(at).sel({schema.POWER: float(row[2])}, method="nearest")
        for name in (schema.EXTENT_RADIUS, schema.EXTENT_RADIUS_LOW, schema.EXTENT_RADIUS_HIGH, schema.EXTENT_N_UNITS):
            assert row[header.index(name)] == report.table_rows(cell[[name]])[2][0][-1], (row[:3], name)
    assert any(r[header.index(schema.EXTENT_RADIUS)] != "NaN" for r in rows), "no radius at all: a useless check"


def test_parameters_are_on_the_page(job: dict) -> None:
    params = job["root"].find_all("table", class_="parameters")[0]
    shown = {tr.find_all("td")[0].text(): tr.find_all("td")[1].text() for tr in params.find_all("tr")[1:]}
    assert shown["extent_n_boot"] == str(N_BOOT)
    assert shown["sessions"] == str(len(job["catalog"]))
    assert shown["stores"] == str(job["catalog"].source)
    assert shown["significance_p"] == str(schema.SIGNIFICANCE_P)


# --------------------------------------------------------------------------
# One pass over the sessions
# --------------------------------------------------------------------------
def _count_tasks(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    original = tasks.session_results

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tasks, "session_results", counted)
    return calls


@pytest.mark.slow
def test_each_session_is_one_task_for_the_table_and_the_psth(tiny_dataset, tmp_path, monkeypatch) -> None:
    calls = _count_tasks(monkeypatch)
    report_job.run_report(tiny_dataset.out, tmp_path / "r.html", n_boot=10)
    assert len(calls) == len(open_catalog(tiny_dataset.out))
    assert all(c["table"] and c["psth_options"] is not None for c in calls)


def test_a_given_table_is_not_computed_again(job: dict, tmp_path, monkeypatch) -> None:
    calls = _count_tasks(monkeypatch)
    content = report_job.report_content(job["catalog"], table=job["table"], n_boot=10)
    plt.close("all")
    assert len(calls) == len(job["catalog"])
    assert not any(c["table"] for c in calls)
    assert content.summary[schema.REPORT_SUMMARY_RESPONDING].tolist() == [
        responding_units(job["catalog"][s], s) for s in job["catalog"].sessions
    ]


# --------------------------------------------------------------------------
# Too little data: the page is still built, the section says why
# --------------------------------------------------------------------------
def _one_session(cat: Catalog, table: pd.DataFrame) -> tuple[Catalog, pd.DataFrame]:
    sid = cat.sessions[0]
    return Catalog({sid: cat.entries()[0][1]}, source="one"), table[table[schema.SESSION_ID] == sid]


def _one_power(cat: Catalog, table: pd.DataFrame) -> tuple[Catalog, pd.DataFrame]:
    level = schema.power_levels(table[schema.POWER].to_numpy())[0]
    return cat, table[level == 0]


def _no_responding_unit(cat: Catalog, table: pd.DataFrame) -> tuple[Catalog, pd.DataFrame]:
    return cat, table.assign(**{schema.SIGNIFICANT: False})


@pytest.mark.parametrize(
    ("shrink", "says"),
    [
        (_one_session, "one session"),
        pytest.param(_one_power, "no unit responding", marks=pytest.mark.slow),
        pytest.param(_no_responding_unit, "no unit responding", marks=pytest.mark.slow),
    ],
)
def test_too_little_data_still_builds_the_page(job: dict, tmp_path: Path, shrink, says: str) -> None:
    cat, table = shrink(job["catalog"], job["table"])
    page = report_job.run_report(cat, tmp_path / "r.html", table=table, n_boot=20)
    _, sections = _parse(page)
    assert list(sections) == HEADINGS
    extent_text = " ".join(_paragraphs(sections["Spatial extent"]))
    assert says in extent_text
    assert "Traceback" not in page.read_text(encoding="utf-8")
    power_text = " ".join(_paragraphs(sections["Power response"]))
    assert "no unit has a good power-response fit" in power_text  # tiny sessions: two powers, nothing to fit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_no_session_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptoCubeError, match=r"empty: no sessions to report"):
        report_job.run_report(tmp_path / "empty", tmp_path / "r.html")
    with pytest.raises(OptoCubeError, match="no sessions to report"):
        report_job.run_report(Catalog({}), tmp_path / "r.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_an_older_report_stays_when_the_job_fails(job: dict, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text("older", encoding="utf-8")
    with pytest.raises(OptoCubeError, match=r"no unit to map|nothing to map"):
        report_job.run_report(job["catalog"], out, table=job["table"].iloc[:0], n_boot=10)
    assert out.read_text(encoding="utf-8") == "older"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    assert plt.get_fignums() == []


# --------------------------------------------------------------------------
# opto-cube report
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_report(tiny_dataset, tmp_path: Path, capsys) -> None:
    out = tmp_path / "site" / "report.html"
    argv = ["report", str(tiny_dataset.out), "--out", str(out), "--n-boot", "20", "--title", "Tiny <catalog>"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "3 sessions" in printed
    root, sections = _parse(out)
    assert list(sections) == HEADINGS
    assert root.find_all("h1")[0].text() == "Tiny <catalog>"
    assert "<catalog>" not in out.read_text(encoding="utf-8")  # escaped


@pytest.mark.slow
def test_cli_report_takes_the_responses_table(job: dict, tiny_dataset, tmp_path: Path, monkeypatch) -> None:
    responses = tmp_path / "responses.csv"
    job["table"].to_csv(responses, index=False)
    calls = _count_tasks(monkeypatch)
    argv = ["report", str(tiny_dataset.out), "--out", str(tmp_path / "r.html"), "--responses", str(responses)]
    assert cli.main([*argv, "--n-boot", "20", "--duration-s", "max"]) == 0
    assert calls
    assert not any(c["table"] for c in calls)
    assert list(_parse(tmp_path / "r.html")[1]) == HEADINGS


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["report", "{tmp}/nowhere", "--out", "{tmp}/o.html"], "nowhere: no such folder of stores"),
        (["report", "{tmp}/empty", "--out", "{tmp}/o.html"], "holds no .zarr stores"),
        (["report", "{stores}", "--out", "{tmp}/o.pdf"], r"o\.pdf: the report is an HTML page"),
        (["report", "{stores}", "--out", "{tmp}/empty"], "is a folder"),
        (["report", "{stores}", "--out", "{tmp}/o.html", "--responses", "{tmp}/missing.csv"], "cannot read the resp"),
        (["report", "{stores}", "--out", "{tmp}/o.html", "--duration-s", "0.02"], r"no duration_s \[0.02\]"),
    ],
)
def test_cli_report_errors_are_one_line(tiny_dataset, tmp_path: Path, capsys, argv, match) -> None:
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, stores=tiny_dataset.out) for a in argv]
    assert cli.main(argv) == cli.EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert re.search(match, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing written


def test_cli_report_refuses_bad_options(tiny_dataset, tmp_path: Path, capsys) -> None:
    for bad in (["--n-boot", "0"], ["--distance-bin-um", "-1"], ["--workers", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["report", str(tiny_dataset.out), "--out", str(tmp_path / "r.html"), *bad])
        assert exit_info.value.code == cli.EXIT_USAGE
        assert "expected a positive" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------
# Realistic sessions
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_report_of_realistic_sessions(tmp_path: Path) -> None:
    """Two realistic sessions (several powers: the power-response fits and their figures), at 10 ms."""
    from opto_cube.jobs import convert

    synth.make_dataset(tmp_path / "data", n_sessions=2, size="realistic", seed=5)
    results = convert.convert(tmp_path / "data", tmp_path / "stores", bin_ms=10)
    assert all(r.status == "converted" for r in results)
    cat = open_catalog(tmp_path / "stores")
    page = report_job.run_report(cat, tmp_path / "report.html", n_boot=200)
    root, sections = _parse(page)
    assert list(sections) == HEADINGS
    table = pipeline.responses_table(cat)
    fits = power_response.power_response(table)
    assert fits[schema.PR_FIT_OK].any()
    assert len(sections["Power response"].find_all("figure")) == 2
    header, rows = html_table(sections["Power response"].find_all("table")[0])
    fitted = {r[0]: int(r[header.index("fitted")]) for r in rows}
    assert fitted == fits.groupby(schema.WAVEFORM_TYPE).size().to_dict()
    assert len(root.find_all("figure")) == 8 + (schema.LATENCY in table)  # maps 3 (+1), extent 2, power 2, PSTH 1
    assert page.stat().st_size < schema.REPORT_MAX_BYTES
    _, summary_rows = html_table(sections["Sessions"].find_all("table")[0])
    assert len(summary_rows) == 2
    assert np.all([int(r[-1]) > 0 for r in summary_rows])
