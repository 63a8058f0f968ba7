"""The plotted report: builds in quick mode, every file it links exists and is valid,
failures are contained, writes are atomic, re-runs replace cleanly, and the
asv reader understands asv 0.6 result files.

One quick build of every section that exists in this checkout is shared by the
tests (module fixture); the robustness tests use small stand-in sections so
they test the builder, not the simulations.
"""

from __future__ import annotations

import io
import json
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from scalelab.bench import asv_results
from scalelab.report.builder import build_report
from scalelab.report.progress import Progress
from scalelab.report.registry import SECTION_NAMES, available_sections, select_sections
from scalelab.report.render import markdown_to_html
from scalelab.report.staging import MANIFEST, TMP_SUFFIX
from scalelab.cli.cli import main
from scalelab.report.figures.style import new_figure
from scalelab.report.section import FigureItem, Section, TableItem, TextItem

from _page_refs import PageRefs  # tests/ helper module

#: Folder (under pytest's session base temp) holding the shared quick build.
SHARED_REPORT_DIR = "quick_report"

# --------------------------------------------------------------------------- helpers


def _local_targets(refs):
    return [r for r in refs if r and not r.startswith("#") and "://" not in r and not r.startswith("mailto:")]


def _assert_valid_png(path: Path):
    with Image.open(path) as img:
        img.load()
        arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert arr.shape[0] > 100 and arr.shape[1] > 100, f"{path.name} is tiny: {arr.shape}"
    # Not one flat colour: a real plot has ink (axes, text, lines) on a light background.
    assert arr.reshape(-1, 3).std(axis=0).max() > 5, f"{path.name} is blank"
    dark = (arr.sum(axis=2) < 300).mean()
    assert dark > 0.001, f"{path.name} has almost no ink ({dark:.5f})"


def _assert_valid_svg(path: Path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), f"{path.name} is not an SVG document"
    drawn = [el for el in root.iter() if el.tag.split("}")[-1] in ("path", "text", "use", "rect", "line")]
    assert len(drawn) > 10, f"{path.name} draws almost nothing"


def _check_output_folder(out: Path):
    """Every check shared by all builds: links resolve, images decode, CSVs parse, no temp files."""
    page = (out / "index.html").read_text(encoding="utf-8")
    parser = PageRefs()
    parser.feed(page)
    assert not parser.external_loads, f"index.html loads external resources: {parser.external_loads}"
    assert "@import" not in page and "url(http" not in page
    for ref in _local_targets(parser.images + parser.links):
        assert not ref.startswith("/"), f"absolute link {ref} in index.html"
        assert (out / ref).is_file(), f"index.html links missing file {ref}"
    md = (out / "report.md").read_text(encoding="utf-8")
    md_refs = re.findall(r"\]\(([^)\s]+)\)", md)
    for ref in _local_targets(md_refs):
        assert (out / ref).is_file(), f"report.md links missing file {ref}"
    for png in out.glob("figures/*.png"):
        _assert_valid_png(png)
        assert png.with_suffix(".svg").is_file(), f"{png.name} has no SVG twin"
    for svg in out.glob("figures/*.svg"):
        _assert_valid_svg(svg)
    for csv in out.glob("data/*.csv"):
        frame = pd.read_csv(csv)
        assert len(frame.columns) >= 1 and len(frame) >= 1, f"{csv.name} is empty"
    assert not list(out.rglob(f"*{TMP_SUFFIX}")), "temporary files left behind"
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert set(manifest) == on_disk
    return parser, md


def _figure(y):
    fig, ax = new_figure()
    ax.plot([1, 2, 3], y, label="series")
    ax.set_xlabel("x (units)")
    ax.set_ylabel("y (units)")
    ax.legend()
    return fig


def _stub_module(name: str, build):
    module = types.ModuleType(name)
    module.TITLE = f"Stand-in {name.rsplit('.', 1)[-1]}"
    module.build = build
    return module


def _good_build(ctx):
    ctx.progress("drawing")
    return Section("Stand-in", [
        TextItem("A paragraph with `code`, **bold** and a list:\n\n- one\n- two"),
        FigureItem("curve", _figure([1, 4, 9]), "Quadratic growth.", data=pd.DataFrame({"x": [1, 2, 3]})),
        TableItem("numbers", pd.DataFrame({"a": [1.5, 2.25], "b": ["p", "q"]}), "Two rows."),
    ])


def _failing_build(ctx):
    raise RuntimeError("simulated failure in a section")


@pytest.fixture
def stub_sections(monkeypatch):
    """Replace the scaling and data_supply modules with fast stand-ins; return a setter."""

    def install(short: str, build):
        spec = next(s for s in select_sections([short]))
        monkeypatch.setitem(sys.modules, spec.module, _stub_module(spec.module, build))

    install("scaling", _good_build)
    install("data_supply", _good_build)
    return install


# --------------------------------------------------------------------------- the real report


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One quick build of every section present in this checkout (no asv results: built-in kernels)."""
    # A fixed name under the session's base folder, so test_report_browser.py can open this
    # same build instead of paying for a second one.
    out = tmp_path_factory.getbasetemp() / SHARED_REPORT_DIR
    fake_repo = tmp_path_factory.mktemp("repo_without_asv")  # no .asv/results: kernels measure themselves
    names = available_sections()
    assert "kernels" in names
    err = io.StringIO()
    result = build_report(out, only=list(names), quick=True, stream=err, repo_root=fake_repo)
    return out, result, err.getvalue()


def test_quick_report_builds_every_available_section(quick_report):
    out, result, progress = quick_report
    failed = {s.name: s.error for s in result.sections if not s.ok}
    assert not failed, f"sections failed: {failed}"
    assert result.exit_code == 0
    assert [s.name for s in result.sections] == [n for n in SECTION_NAMES if n in available_sections()]
    assert all(s.n_figures >= 1 for s in result.sections), "every section draws at least one figure"
    # The non-TTY progress output is one line per section plus the pages, never a carriage return.
    assert "\r" not in progress and progress.count("\n") == len(result.sections) + 1


def test_quick_report_files_are_valid(quick_report):
    out, result, _ = quick_report
    parser, md = _check_output_folder(out)
    n_figures = sum(s.n_figures for s in result.sections)
    assert len(parser.images) == n_figures == len(list(out.glob("figures/*.png")))
    assert md.count("![") == n_figures
    page = (out / "index.html").read_text()
    for section in result.sections:
        assert section.title in page and f"## {section.title}" in md


def test_page_names_the_machine(quick_report):
    out, result, _ = quick_report
    page = (out / "index.html").read_text()
    for key in ("CPU", "Cores", "BLAS", "NumPy", "Numba", "Date"):
        assert f"<th>{key}</th>" in page
    assert result.machine["NumPy"] == np.__version__
    assert "kernel" in result.machine["BLAS"]  # the BLAS kernel threadpoolctl reports


def test_kernel_section_without_asv_says_it_measured_itself(quick_report):
    out, result, _ = quick_report
    page = (out / "index.html").read_text()
    assert "No asv results were found" in page
    table = pd.read_csv(out / "data" / "kernels_attention.csv")
    assert {"prefill", "decode"} <= set(table["kernel"])
    # Honest numbers: positive times, finite ratios, and the kernel agrees with its reference.
    assert (table["numba_ms"] > 0).all() and (table["numpy_f32_ms"] > 0).all()
    assert np.isfinite(table["speedup_vs_numpy_f32"]).all()
    assert (table["max_abs_err_vs_ref"] < 1e-3).all()
    # The float64 reference is an oracle: accuracy columns only, never a speed-up.
    assert "numpy_ms" not in table and "speedup_vs_numpy" not in table
    assert (table["numpy_f32_max_abs_err_vs_ref"] < 1e-3).all()
    assert "vs NumPy float32" in page and ("make bench-torch" in page or "vs PyTorch" in page)
    roof = pd.read_csv(out / "data" / "kernels_ceilings.csv")
    assert roof.loc[0, "peak_gflops"] > 0 and roof.loc[0, "read_bandwidth_gbps"] > 0


# --------------------------------------------------------------------------- robustness


def test_failing_section_is_reported_and_others_build(tmp_path, stub_sections):
    stub_sections("data_supply", _failing_build)
    err = io.StringIO()
    result = build_report(tmp_path, only=["scaling", "data_supply"], quick=True, stream=err)
    assert result.exit_code == 1
    status = {s.name: s for s in result.sections}
    assert status["scaling"].ok and not status["data_supply"].ok
    assert "simulated failure" in status["data_supply"].error
    page = (tmp_path / "index.html").read_text()
    assert "This section failed to build" in page and "<details><summary>Traceback</summary>" in page
    assert "RuntimeError: simulated failure in a section" in page
    assert "simulated failure" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "figures" / "scaling_curve.png").is_file()
    assert not list(tmp_path.glob("figures/data_supply_*"))
    _check_output_folder(tmp_path)


def test_missing_section_module_is_reported(tmp_path, stub_sections, monkeypatch):
    monkeypatch.setitem(sys.modules, "scalelab.report.sections.test_time_compute", None)  # import fails
    result = build_report(tmp_path, only=["scaling", "test_time_compute"], stream=io.StringIO())
    assert result.exit_code == 1
    bad = result.sections[-1]
    assert not bad.ok and "test_time_compute" in bad.error
    assert result.sections[0].ok


def test_section_failing_mid_render_leaves_none_of_its_files(tmp_path, stub_sections):
    def half_bad(ctx):
        return Section("Half", [FigureItem("fine", _figure([1, 2, 3]), "ok"),
                                FigureItem("Bad Name!", _figure([3, 2, 1]), "invalid name")])

    stub_sections("data_supply", half_bad)
    result = build_report(tmp_path, only=["scaling", "data_supply"], stream=io.StringIO())
    assert result.exit_code == 1
    assert "Bad Name!" in result.sections[1].error
    assert not list(tmp_path.glob("figures/data_supply_*")) and not list(tmp_path.glob("data/data_supply_*"))
    _check_output_folder(tmp_path)


def test_rerun_replaces_cleanly_and_keeps_foreign_files(tmp_path, stub_sections):
    build_report(tmp_path, only=["scaling", "data_supply"], stream=io.StringIO())
    assert (tmp_path / "figures" / "data_supply_curve.png").is_file()
    (tmp_path / "notes.txt").write_text("mine")  # not the builder's: must survive
    (tmp_path / "figures" / "my_plot.png").write_bytes(b"not ours")
    leftover = tmp_path / "figures" / f".scaling_curve.png.123-dead{TMP_SUFFIX}"
    leftover.write_bytes(b"half-written by a crashed run")
    before = (tmp_path / "figures" / "scaling_curve.png").stat().st_mtime_ns

    result = build_report(tmp_path, only=["scaling"], stream=io.StringIO())
    assert result.exit_code == 0
    assert not list(tmp_path.glob("figures/data_supply_*")) and not list(tmp_path.glob("data/data_supply_*"))
    assert "figures/data_supply_curve.png" in result.removed
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "figures" / "my_plot.png").read_bytes() == b"not ours"
    assert not leftover.exists()
    assert (tmp_path / "figures" / "scaling_curve.png").stat().st_mtime_ns >= before
    manifest = json.loads((tmp_path / MANIFEST).read_text())["files"]
    assert "figures/my_plot.png" not in manifest and "notes.txt" not in manifest
    assert "Data supply" not in (tmp_path / "index.html").read_text()


def test_progress_redraws_only_on_a_terminal():
    tty, log = io.StringIO(), io.StringIO()
    for stream, is_tty in ((tty, True), (log, False)):
        p = Progress(2, stream, tty=is_tty)
        p.begin(1, "scaling")
        p.update("fitting")
        p.end("ok")
        p.begin(2, "kernels")
        p.end("ok")
        p.close()
    assert "\r" in tty.getvalue() and "1/2 scaling" in tty.getvalue()
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == [l for l in log.getvalue().splitlines() if re.match(r"\[\d/2\] \w+: ok", l)]
    assert len(log.getvalue().splitlines()) == 2


def test_markdown_subset_renders_and_escapes():
    out = markdown_to_html("Use `a<b` and **bold** *it*; [link](figures/x.png)\n\n- one\n- two <script>")
    assert "<code>a&lt;b</code>" in out and "<strong>bold</strong>" in out and "<em>it</em>" in out
    assert '<a href="figures/x.png">link</a>' in out and "<li>two &lt;script&gt;</li>" in out


# --------------------------------------------------------------------------- command line


def test_cli_unknown_section_is_one_line_exit_2(capsys, tmp_path):
    assert main(["report", "--out", str(tmp_path), "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing was built


def test_cli_out_is_a_file_is_one_line_exit_2(capsys, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    assert main(["report", "--out", str(target), "--only", "scaling"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "directory" in err


def test_cli_bad_flag_is_one_line_exit_2(capsys):
    assert main(["report", "--quick", "--no-such-flag"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_builds_and_summarises(capsys, tmp_path, stub_sections):
    stub_sections("data_supply", _failing_build)
    code = main(["report", "--out", str(tmp_path), "--only", "scaling", "data_supply", "--quick"])
    assert code == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and str(tmp_path / "index.html") in captured.out
    assert "[1/3] scaling: ok" in captured.err  # captured stderr is not a terminal
    code = main(["report", "--out", str(tmp_path), "--only", "scaling"])
    assert code == 0 and "1 ok" in capsys.readouterr().out


# --------------------------------------------------------------------------- asv results


def _write_asv_fixture(root: Path, commits: list[tuple[str, int, float]], *, machine: str = "benchbox"):
    """A small asv 0.6 results tree (results API version 2), like ``asv run`` writes.

    ``commits``: (hash, js-millisecond date, factor applied to our kernel's times).
    Prefill: params L x threads, ours / NumPy / torch (torch skipped = null), plus a
    GFLOP/s track benchmark; decode: an impl parameter and a GB/s track benchmark.
    """
    results = root / ".asv" / "results"
    (results / machine).mkdir(parents=True)
    prefill_params = [["512", "1024"], ["1", "2"]]
    decode_params = [["'numba'", "'numpy'", "'torch'"], ["8", "32"]]
    bench = {
        "attention.Prefill.time_numba": dict(param_names=["L", "threads"], params=prefill_params, type="time", unit="seconds"),
        "attention.Prefill.time_numpy": dict(param_names=["L", "threads"], params=prefill_params, type="time", unit="seconds"),
        "attention.Prefill.time_torch": dict(param_names=["L", "threads"], params=prefill_params, type="time", unit="seconds"),
        "attention.Prefill.track_gflops": dict(param_names=["L", "threads"], params=prefill_params, type="track", unit="GFLOP/s"),
        "attention.Decode.time_decode": dict(param_names=["impl", "hkv"], params=decode_params, type="time", unit="seconds"),
        "attention.Decode.track_kv_bandwidth": dict(param_names=["hkv"], params=[["8", "32"]], type="track", unit="GB/s"),
        "attention.Compile.timeraw_compile": dict(param_names=[], params=[], type="time", unit="seconds"),
    }
    for name, desc in bench.items():
        desc.update(name=name, code="", version="0" * 64)
    (results / "benchmarks.json").write_text(json.dumps({**bench, "version": 2}))
    (results / machine / "machine.json").write_text(json.dumps(
        {"arch": "x86_64", "cpu": "Test CPU 9000", "machine": machine, "num_cpu": "2", "os": "Linux",
         "ram": "1000", "version": 1}))
    columns = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
               "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
    for commit, date, factor in commits:
        ours = [0.010 * factor, 0.006 * factor, 0.040 * factor, 0.022 * factor]  # L x threads
        rows = {
            "attention.Prefill.time_numba": [ours, prefill_params, "0" * 64, date, 1.0, [x * 0.9 for x in ours],
                                             [x * 1.1 for x in ours], ours, ours, [1] * 4, [10] * 4],
            "attention.Prefill.time_numpy": [[0.050, 0.048, 0.210, 0.200], prefill_params, "0" * 64, date, 1.0],
            "attention.Prefill.time_torch": [None, prefill_params, "0" * 64, date, 1.0],
            "attention.Prefill.track_gflops": [[60.0, 100.0, 70.0, 120.0], prefill_params, "0" * 64, date, 0.5],
            "attention.Decode.time_decode": [[0.002 * factor, 0.004 * factor, 0.008, 0.016, 0.003, float("nan")],
                                             decode_params, "0" * 64, date, 1.0],
            "attention.Decode.track_kv_bandwidth": [[30.0, 35.0], [["8", "32"]], "0" * 64, date, 0.5],
            "attention.Compile.timeraw_compile": [[2.5], [], "0" * 64, date, 3.0],
        }
        body = {"commit_hash": commit, "env_name": "existing-py_usr_bin_python3", "date": date,
                "params": {"arch": "x86_64", "cpu": "Test CPU 9000", "machine": machine, "num_cpu": "2",
                           "os": "Linux", "ram": "1000", "python": "3.11"},
                "python": "3.11", "requirements": {}, "env_vars": {}, "result_columns": columns,
                "results": rows, "durations": {}, "version": 2}
        # asv writes NaN/Infinity literals; json.dumps does the same by default.
        (results / machine / f"{commit[:8]}-existing-py_usr_bin_python3.json").write_text(json.dumps(body))
    (results / machine / "notes.json").write_text("{not json")  # a stray file must be skipped
    return results


def test_asv_reader_long_format_and_classification(tmp_path):
    results = _write_asv_fixture(tmp_path, [("a" * 40, 1_700_000_000_000, 1.0)])
    assert asv_results.find_results_dir(tmp_path) == results
    frame = asv_results.load_results(results)
    prefill = frame[frame["benchmark"] == "attention.Prefill.time_numba"]
    assert len(prefill) == 4 and set(prefill["shape"]) == {"L=512", "L=1024"}
    assert set(prefill["threads"]) == {1, 2} and set(prefill["impl"]) == {"numba"}
    row = prefill[(prefill["shape"] == "L=1024") & (prefill["threads"] == 2)].iloc[0]
    assert row["value"] == pytest.approx(0.022) and row["kernel"] == "attention.prefill"
    assert set(frame.loc[frame["benchmark"].str.endswith("time_torch"), "impl"]) == {"torch"}
    assert frame.loc[frame["benchmark"].str.endswith("time_torch"), "value"].isna().all()
    decode = frame[frame["benchmark"] == "attention.Decode.time_decode"]
    assert list(decode["impl"]) == ["numba", "numba", "numpy", "numpy", "torch", "torch"]
    assert set(decode["kernel"]) == {"attention.decode"} and set(decode["shape"]) == {"hkv=8", "hkv=32"}

    sp = asv_results.speedups(frame).set_index(["kernel", "shape", "threads"])
    assert sp.loc[("attention.prefill", "L=512", 1), "speedup_vs_numpy"] == pytest.approx(5.0)
    assert np.isnan(sp.loc[("attention.prefill", "L=512", 1), "speedup_vs_torch"])
    dec = asv_results.speedups(frame).query("kernel == 'attention.decode'").set_index("shape")
    assert dec.loc["hkv=8", "speedup_vs_numpy"] == pytest.approx(4.0)
    assert dec.loc["hkv=8", "speedup_vs_torch"] == pytest.approx(1.5)
    assert np.isnan(dec.loc["hkv=32", "speedup_vs_torch"])  # NaN peer result: no ratio

    compile_rows = frame[frame["benchmark"] == "attention.Compile.timeraw_compile"]
    assert list(compile_rows["type"]) == ["timeraw"] and compile_rows["value"].iloc[0] == 2.5
    assert "attention.compile" not in set(asv_results.speedups(frame)["kernel"])  # not a kernel time

    tp = asv_results.throughputs(frame)
    assert set(tp["metric"]) == {"compute", "bandwidth"}
    assert tp.loc[tp["unit"] == "GB/s", "per_s"].max() == pytest.approx(35e9)


@pytest.mark.parametrize("name, params, expected", [
    ("attention.Prefill.time_numba", {"L": 512}, ("attention.prefill", "numba")),
    ("attention.PrefillTorch.time_prefill", {}, ("attention.prefill", "torch")),
    ("attention.AttentionPrefill.time_sdpa", {}, ("attention.prefill", "torch")),
    ("sampling.TopK.time_top_k_ref", {}, ("sampling.top_k", "numpy")),
    ("moe.Route.time_route", {"impl": "numpy"}, ("moe.route", "numpy")),
    ("moe.RouteNumPy.time_run", {}, ("moe.route.run", "numpy")),
    ("attention.Decode.track_gbps", {"backend": "torch"}, ("attention.decode", "torch")),
    ("attention.PrefillAttention.time_prefill", {"impl": "numpy_f32"}, ("attention.prefill", "numpy_f32")),
    ("sampling.TopK.time_top_k_numpy_f32", {}, ("sampling.top_k", "numpy_f32")),
])
def test_asv_name_classification(name, params, expected):
    kernel, impl, _, _ = asv_results.classify(name, params)
    assert (kernel, impl) == expected


def test_asv_history_orders_commits_by_date(tmp_path):
    results = _write_asv_fixture(tmp_path, [("b" * 40, 1_700_000_500_000, 0.5), ("a" * 40, 1_700_000_000_000, 1.0)])
    hist = asv_results.history(asv_results.load_results(results))
    assert list(dict.fromkeys(hist["commit"])) == ["aaaaaaaa", "bbbbbbbb"]
    pre = hist[(hist["kernel"] == "attention.prefill") & (hist["shape"] == "L=512") & (hist["threads"] == 1)]
    assert list(pre["numba_s"]) == pytest.approx([0.010, 0.005])


def test_kernel_section_reads_asv_results(tmp_path):
    repo = tmp_path / "repo"
    _write_asv_fixture(repo, [("a" * 40, 1_700_000_000_000, 1.0), ("b" * 40, 1_700_000_500_000, 0.8)])
    out = tmp_path / "out"
    result = build_report(out, only=["kernels"], quick=True, stream=io.StringIO(), repo_root=repo)
    assert result.exit_code == 0, result.sections[0].traceback
    names = {p.stem for p in out.glob("figures/*.png")}
    assert {"kernels_asv_speedup", "kernels_asv_families", "kernels_asv_history"} <= names
    page = (out / "index.html").read_text()
    assert "asv results" in page and "Test CPU 9000" in page and "No asv results" not in page
    assert "hold no ceilings of their own" in page  # no roofline benchmarks: no roofline against other ceilings
    sp = pd.read_csv(out / "data" / "kernels_asv_speedup.csv").set_index("family")
    # The float64 reference is never a peer: prefill, timed only against it here, has no ratio.
    assert sp.loc["decode", "peer"] == "torch" and np.isnan(sp.loc["prefill", "geomean_speedup"])
    hist = pd.read_csv(out / "data" / "kernels_asv_history.csv")
    assert set(hist["commit"]) == {"aaaaaaaa", "bbbbbbbb"}
    _check_output_folder(out)


def _write_minimal_results(root: Path, benchmarks: dict) -> Path:
    """asv results for one commit: ``{name: (param_names, params, values, unit)}``."""
    results = root / ".asv" / "results"
    (results / "box").mkdir(parents=True)
    described = {}
    rows = {}
    for name, (names, params, values, unit) in benchmarks.items():
        reprs = [[repr(v) for v in p] for p in params]
        kind = "track" if name.split(".")[-1].startswith("track_") else "time"
        described[name] = dict(name=name, param_names=names, params=reprs, type=kind, unit=unit, version="0")
        rows[name] = [values, reprs, "0", 1, 1.0]
    (results / "benchmarks.json").write_text(json.dumps({**described, "version": 2}))
    (results / "box" / "machine.json").write_text(json.dumps({"machine": "box", "cpu": "c", "version": 1}))
    (results / "box" / "cccccccc-env.json").write_text(json.dumps({
        "commit_hash": "c" * 40, "env_name": "env", "date": 1, "params": {"machine": "box"}, "python": "3.11",
        "requirements": {}, "env_vars": {}, "result_columns": ["result", "params", "version", "started_at", "duration"],
        "results": rows, "durations": {}, "version": 2}))
    return results


def test_asv_suite_layouts_pair_ours_with_peers(tmp_path):
    """The layouts asv_benchmarks/ uses: impl as a parameter, peers as sibling methods or
    sibling classes, several timed methods in one class, and a non-peer variant."""
    t = ["B", "V", "threads"], [[8], [32000], [2]]
    results = _write_minimal_results(tmp_path, {
        "attention.DecodeAttention.time_decode": (["impl", "Hkv"], [["numba", "numpy", "torch"], [8]], [1.0, 4.0, 2.0], "seconds"),
        "attention.PagedDecodeAttention.time_decode": (["impl", "Hkv"], [["numba", "numpy", "torch"], [8]], [1.1, 4.0, 2.2], "seconds"),
        "sampling.TopK.time_top_k": (*t, [1.0], "seconds"),
        "sampling.TopK.time_top_k_numpy_ref": (*t, [8.0], "seconds"),
        "sampling.TopKTorch.time_torch_topk": (*t, [3.0], "seconds"),
        "moe.RouteDispatch.time_route": (["impl"], [["numba", "numpy"]], [1.0, 5.0], "seconds"),
        "moe.RouteDispatch.time_dispatch": (["impl"], [["numba", "numpy"]], [1.0, 0.5], "seconds"),
        "moe.MoELayer.time_layer": (["impl"], [["numba", "dense", "numpy_ref"]], [1.0, 0.1, 10.0], "seconds"),
        "attention.AttentionBlasEnvironment.track_threads": (["library"], [["openblas"]], [2], "threads"),
    })
    sp = asv_results.speedups(asv_results.load_results(results)).set_index("kernel")
    assert sp.loc["attention.decode", "speedup_vs_numpy"] == pytest.approx(4.0)
    assert sp.loc["attention.paged_decode", "speedup_vs_torch"] == pytest.approx(2.0)
    assert sp.loc["sampling.top_k", "speedup_vs_numpy"] == pytest.approx(8.0)
    assert sp.loc["sampling.top_k", "speedup_vs_torch"] == pytest.approx(3.0)  # peer in a sibling class
    assert sp.loc["moe.route_dispatch.route", "speedup_vs_numpy"] == pytest.approx(5.0)
    assert sp.loc["moe.route_dispatch.dispatch", "speedup_vs_numpy"] == pytest.approx(0.5)
    # "dense" is another variant, not ours: our layer time stays 1.0, not the dense 0.1.
    assert sp.loc["moe.layer", "numba_s"] == pytest.approx(1.0)
    assert sp.loc["moe.layer", "speedup_vs_numpy"] == pytest.approx(10.0)
    assert asv_results.throughputs(asv_results.load_results(results)).empty  # "threads" is not a rate


def test_kernel_section_compares_with_the_float32_peer_not_the_reference(tmp_path):
    repo = tmp_path / "repo"
    _write_minimal_results(repo, {
        "attention.PrefillAttention.time_prefill": (
            ["impl", "L"], [["numba", "numpy", "numpy_f32", "torch"], [512]], [1.0, 20.0, 3.0, None], "seconds"),
    })
    sp = asv_results.speedups(asv_results.load_results(repo / ".asv" / "results")).set_index("kernel")
    assert sp.loc["attention.prefill", "speedup_vs_numpy_f32"] == pytest.approx(3.0)
    out = tmp_path / "out"
    result = build_report(out, only=["kernels"], quick=True, stream=io.StringIO(), repo_root=repo)
    assert result.exit_code == 0, result.sections[0].traceback
    summary = pd.read_csv(out / "data" / "kernels_asv_speedup.csv")
    assert set(summary["peer"]) == {"numpy_f32"} and summary["geomean_speedup"].tolist() == pytest.approx([3.0])
    times = pd.read_csv(out / "data" / "kernels_asv_times.csv")
    assert "speedup_vs_numpy" not in times and "numpy_ms" not in times
    page = (out / "index.html").read_text()
    assert "float32 NumPy peer" in page and "make bench-torch" in page and "predate" not in page
