"""The kernel section on real asv results: readable figures, fair peers, consistent ceilings, history.

``tests/data/asv_kernels/`` holds a trimmed copy of real ``asv run --quick``
results of this suite (two commits of main, the newer with the roofline
benchmarks; see its README). Figures are rendered and every text's bounding
box checked: inside the figure, and overlapping no other text.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from scalelab.bench import asv_results
from scalelab.report.builder import build_report
from scalelab.report.figures import kernels_asv as kfig
from scalelab.report.section import FigureItem, TextItem
from scalelab.report.sections import kernels_asv as kasv
from scalelab.simulations.calibration import DRAM_LLC_MULTIPLE

DATA = Path(__file__).parent / "data" / "asv_kernels"


def _repo(tmp_path: Path, commits: int = 2) -> Path:
    """A checkout-like folder whose .asv/results holds the fixture (only the newest commit if ``commits`` == 1)."""
    repo = tmp_path / "repo"
    shutil.copytree(DATA / "results", repo / ".asv" / "results")
    if commits == 1:
        files = sorted((repo / ".asv" / "results").glob("*/*-*.json"), key=lambda p: json.loads(p.read_text())["date"])
        for path in files[:-1]:
            path.unlink()
    return repo


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return kasv.kernel_rows(asv_results.load_results(DATA / "results"))


# --------------------------------------------------------------------------- text layout


def _drawn_ticklabels(ax):
    """Tick labels matplotlib actually draws: non-empty, at a tick inside the view limits."""
    out = []
    for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
        for tick in axis.get_major_ticks():
            label = tick.label1
            if label.get_visible() and label.get_text() and lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                out.append(label)
    return out


def _texts(fig):
    """Every visible, non-empty text of ``fig``: tick labels, axis labels, titles, annotations, legends."""
    texts = list(fig.texts)
    legends = list(fig.legends)
    for ax in fig.axes:
        texts += _drawn_ticklabels(ax)
        texts += [ax.xaxis.label, ax.yaxis.label, ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    for legend in legends:
        texts += legend.get_texts()
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def layout_problems(fig) -> list[str]:
    """Texts outside the figure and pairs of overlapping texts, after drawing ``fig``."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    page = fig.bbox
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
    problems = []
    for text, box in boxes:
        if box.x0 < page.x0 - 1 or box.y0 < page.y0 - 1 or box.x1 > page.x1 + 1 or box.y1 > page.y1 + 1:
            problems.append(f"outside the figure: {text!r}")
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        if w > 1 and h > 1:  # more than a pixel of ink-box overlap
            problems.append(f"overlap: {ta!r} and {tb!r}")
    return problems


@pytest.mark.filterwarnings("ignore:constrained_layout not applied")
def test_layout_check_catches_overlap_and_clipping():
    """The checker itself can fail: crowded tick labels and a title past the edge are found."""
    from scalelab.report.figures.style import new_figure

    fig, ax = new_figure(width=2.0, height=2.0)
    ax.set_xticks(range(12), [f"label number {i}" for i in range(12)])
    ax.set_title("a title far too long for a two-inch figure, cut off at the right", loc="left")
    problems = layout_problems(fig)
    assert any(p.startswith("overlap") for p in problems)
    assert any(p.startswith("outside") for p in problems)


def test_every_kernel_figure_renders_without_overlapping_or_clipped_text(tmp_path):
    items = kasv.asv_items(_frame_of(_repo(tmp_path)), _repo_results(tmp_path), "vm", tmp_path / "repo")
    figures = [i for i in items if isinstance(i, FigureItem)]
    assert {f.name for f in figures} == {"asv_speedup", "asv_families", "asv_roofline", "asv_history"}
    for item in figures:
        assert layout_problems(item.figure) == [], item.name


def _repo_results(tmp_path: Path) -> Path:
    return tmp_path / "repo" / ".asv" / "results"


def _frame_of(repo: Path) -> pd.DataFrame:
    return kasv.kernel_rows(asv_results.load_results(repo / ".asv" / "results"))


# --------------------------------------------------------------------------- summary


def test_summary_bars_equal_the_csv_and_never_use_the_reference(tmp_path):
    repo = _repo(tmp_path)
    out = tmp_path / "out"
    result = build_report(out, only=["kernels"], quick=True, stream=io.StringIO(), repo_root=repo)
    assert result.exit_code == 0, result.sections[0].traceback
    summary = pd.read_csv(out / "data" / "kernels_asv_speedup.csv", keep_default_na=False,
                          na_values=[""]).fillna({"peer": ""})
    times = pd.read_csv(out / "data" / "kernels_asv_times.csv")
    assert set(summary["peer"]) <= {"numpy_f32", "torch", ""} and "numpy" not in set(summary["peer"])
    assert summary["family"].is_unique and len(summary) >= 8
    for row in summary.itertuples(index=False):
        if not row.peer:
            continue
        at = times[(times["family"] == row.family) & (times["threads"] == row.threads)]
        ratios = at[f"speedup_vs_{row.peer}"].dropna()
        assert row.threads == times.loc[times["family"] == row.family, "threads"].max()
        assert row.geomean_speedup == pytest.approx(float(np.exp(np.log(ratios).mean())), rel=1e-9)
        assert (row.min_speedup, row.max_speedup) == pytest.approx((ratios.min(), ratios.max()), rel=1e-9)
        # the hardest fair peer: no other fair peer has a smaller geometric mean
        for other in kasv.FAIR_PEERS:
            r = at[f"speedup_vs_{other}"].dropna()
            if len(r):
                assert row.geomean_speedup <= float(np.exp(np.log(r).mean())) * (1 + 1e-12)
    fig = kfig.summary_figure(kasv.summary_table(kasv.times_table(asv_results.latest(_frame_of(repo)))))
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths == pytest.approx(summary["geomean_speedup"].tolist(), nan_ok=True)
    assert result.sections[0].ok


def test_summary_picks_the_hardest_fair_peer_and_ignores_the_reference():
    times = pd.DataFrame({
        "family": ["decode"] * 3, "threads": [2, 2, 1],
        "speedup_vs_torch": [1.5, 2.0, 0.1], "speedup_vs_numpy_f32": [4.0, 1.0, 9.0],
        "numpy_f64_reference_ms": [1e3] * 3,
    })
    row = kasv.summary_table(times).iloc[0]
    # torch: geomean(1.5, 2) = 1.73; numpy_f32: geomean(4, 1) = 2: torch is harder. 1-thread rows ignored.
    assert row["peer"] == "torch" and row["threads"] == 2
    assert row["geomean_speedup"] == pytest.approx(np.sqrt(3.0))
    assert (row["min_speedup"], row["max_speedup"]) == (1.5, 2.0)


def test_dense_baselines_are_never_the_pytorch_peer():
    """The MoE layer's dense FFN (numba ``dense``, PyTorch ``torch_dense``) is another computation: the
    speed-up over PyTorch uses PyTorch's MoE layer alone, even when its dense FFN is faster."""
    assert asv_results.impl_of("torch_dense") == "torch_dense" and asv_results.impl_of("TorchDense") == "torch_dense"
    assert asv_results.impl_of("dense") is None and asv_results.impl_of("torch") == "torch"
    assert asv_results.impl_of("NumPyF32") == "numpy_f32"
    rows = []
    for impl, seconds in (("numba", 2.0), ("dense", 1.0), ("torch", 4.0), ("torch_dense", 1.0)):
        params = {"impl": impl, "threads": 2, "blas": "b"}
        kernel, impl_name, threads, shape = asv_results.classify("moe.MoELayer.time_layer", params)
        rows.append(dict(type="time", value=seconds, kernel=kernel, impl=impl_name, threads=threads, shape=shape,
                         benchmark="moe.MoELayer.time_layer", params=json.dumps(params), module="moe",
                         cls="MoELayer", method="time_layer", commit="c" * 40, machine="m"))
    sp = asv_results.speedups(pd.DataFrame(rows)).iloc[0]
    assert sp["torch_s"] == 4.0 and sp["speedup_vs_torch"] == pytest.approx(2.0)


def test_times_table_sorted_by_family_and_shape_with_headlines_first(frame):
    times = kasv.times_table(asv_results.latest(frame))
    n_head = int(times["headline"].sum())
    assert n_head == times["family"].nunique() and times["headline"].iloc[:n_head].all()
    ranks = times["family"].map(kasv.family_rank)
    assert ranks.iloc[:n_head].is_monotonic_increasing and ranks.iloc[n_head:].is_monotonic_increasing
    rest = times.iloc[n_head:]
    assert rest.equals(kasv.sort_rows(rest.drop(columns=[])).set_axis(rest.index))
    assert len(times) == len(asv_results.speedups(asv_results.latest(frame)))  # every row, none dropped


# --------------------------------------------------------------------------- roofline


def test_ceilings_come_from_the_same_run(frame):
    now = asv_results.latest(frame)
    ceil = kasv.ceilings_of(now)
    assert set(ceil["read"]) == {1, 2} and set(ceil["sgemm"]) == {1, 2}
    assert ceil["llc_bytes"] and ceil["llc_bytes"] >= 2**20 and ceil["blas"]
    roof = now[(now["module"] == "roofline") & (now["type"] == "track")]
    for kind, method in (("read", "track_read_gbps"), ("sgemm", "track_sgemm_gflops")):
        measured = roof[roof["method"] == method].set_index("threads")["value"] * 1e9
        # never below the same run's figure at that thread count, and never falling with more threads
        assert all(ceil[kind][t] >= measured[t] for t in (1, 2)) and ceil[kind][2] >= ceil[kind][1]
        assert ceil[kind][2] == max(measured[1], measured[2]) and ceil[kind][1] == measured[1]


def test_no_dram_bound_rate_exceeds_its_ceiling_beyond_noise(frame):
    now = asv_results.latest(frame)
    roof = kasv.roofline_table(now, kasv.ceilings_of(now))
    bw = roof[roof["metric"] == "bandwidth"]
    assert (~bw["in_llc"]).any() and bw["working_set_bytes"].notna().all()
    assert kasv.above_ceiling(roof).empty, kasv.above_ceiling(roof)[["family", "label", "fraction_of_ceiling"]]


def test_dram_bound_means_a_working_set_past_four_llc_sizes(frame):
    """Only rates moving more than DRAM_LLC_MULTIPLE x the LLC per call face the DRAM ceiling; the
    working set is the smallest rate x time estimate over the implementations (which count the same bytes)."""
    now = asv_results.latest(frame)
    ceil = kasv.ceilings_of(now)
    roof = kasv.roofline_table(now, ceil)
    bw = roof[roof["metric"] == "bandwidth"]
    llc = ceil["llc_bytes"]
    assert (bw["in_llc"] == (bw["working_set_bytes"] < DRAM_LLC_MULTIPLE * llc)).all()
    assert bw.groupby(["kernel", "shape", "threads"])["working_set_bytes"].nunique().eq(1).all()
    smallest = bw.groupby(["kernel", "shape", "threads"])["rate_x_time_bytes"].transform("min")
    assert (bw["working_set_bytes"] == smallest).all() and (bw["working_set_bytes"] <= bw["rate_x_time_bytes"]).all()
    permute = bw[bw["family"] == "permute / unpermute"].set_index(["shape", "impl"])["in_llc"]
    # T=8192, d=4096, top-2 of 8 moves ~900 MiB a call: DRAM-bound; top-k of one 256000-logit row
    # (~1 MiB) is cache-resident.
    assert not permute[("T=8192, config=E8k2", "numba")]
    topk = bw[bw["family"] == "top-k"].set_index(["shape", "impl"])["in_llc"]
    assert topk[("B=1, V=256000", "numba")]
    assert (roof.loc[roof["in_llc"], "bound"].str.contains("last-level cache")).all()
    assert (roof.loc[~roof["in_llc"] & (roof["metric"] == "bandwidth"), "bound"] == "DRAM read stream").all()


def test_section_names_every_contradiction_it_finds(frame, tmp_path):
    items = kasv.asv_items(frame, DATA / "results", "vm", tmp_path)
    now = asv_results.latest(frame)
    bad = kasv.above_ceiling(kasv.roofline_table(now, kasv.ceilings_of(now)))
    notes = [i.markdown for i in items if isinstance(i, TextItem) and "above the ceiling" in i.markdown]
    assert len(notes) == (1 if len(bad) else 0)
    if len(bad):
        assert f"{len(bad)} rate(s)" in notes[0]


def test_cache_resident_rows_are_exempt_and_contradictions_are_found():
    roof = pd.DataFrame({"in_llc": [True, False, False], "fraction_of_ceiling": [3.0, 1.05, 1.3]})
    assert kasv.above_ceiling(roof, noise=0.1).index.tolist() == [2]


# --------------------------------------------------------------------------- history


def test_history_over_two_real_commits(frame, tmp_path):
    hist = kasv.history_table(frame, DATA / "results")
    assert hist["order"].nunique() == 2 and set(hist["commit"]) == {c[:8] for c in frame["commit"].unique()}
    # The older run left decode and paged decode out: nothing in common there.
    drawn = hist.groupby("family")["n_shapes"].min()
    assert set(drawn[drawn == 0].index) == {"decode", "paged decode"}
    assert len(drawn[drawn > 0]) >= 6 and hist["numba_ms_geomean"][hist["n_shapes"] > 0].gt(0).all()


def test_one_commit_says_how_to_add_another(tmp_path):
    repo = _repo(tmp_path, commits=1)
    frame = _frame_of(repo)
    assert frame["commit"].nunique() == 1
    items = kasv.asv_items(frame, repo / ".asv" / "results", "vm", repo)
    assert "asv_history" not in {i.name for i in items if isinstance(i, FigureItem)}
    assert any("--set-commit-hash" in i.markdown for i in items if isinstance(i, TextItem))


def test_history_flags_a_regression_by_the_gates_rule(tmp_path):
    """Two commits with recorded samples: ours 2x slower at the second is a regression; peers are not judged."""
    results = tmp_path / ".asv" / "results"
    (results / "box").mkdir(parents=True)
    name = "sampling.TopK.time_top_k"
    (results / "benchmarks.json").write_text(json.dumps({
        name: dict(name=name, param_names=["B", "V", "threads"], params=[["1"], ["32000"], ["2"]],
                   type="time", unit="seconds", version="0"), "version": 2}))
    rng = np.random.default_rng(0)
    for i, (commit, scale) in enumerate((("a" * 40, 1.0), ("b" * 40, 2.0))):
        samples = list(1e-3 * scale * (1 + 0.01 * rng.random(20)))
        (results / "box" / f"{commit[:8]}-env.json").write_text(json.dumps({
            "commit_hash": commit, "env_name": "env", "date": 1_700_000_000_000 + i, "params": {"machine": "box"},
            "python": "3.11", "requirements": {}, "env_vars": {}, "version": 2,
            "result_columns": ["result", "params", "version", "started_at", "duration", "samples"],
            "results": {name: [[float(np.median(samples))], [["1"], ["32000"], ["2"]], "0", 1, 1.0, [samples]]},
            "durations": {}}))
    hist = kasv.history_table(asv_results.load_results(results), results).set_index("order")
    assert hist.loc[1, "regressions"] == 1 and hist.loc[0, "regressions"] == 0
    assert hist.loc[1, "numba_ms_geomean"] == pytest.approx(2 * hist.loc[0, "numba_ms_geomean"], rel=0.05)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("shape, expected", [
    ("B=32, V=256000", "B32 V256k"), ("T=8192, config=E256k8g8", "T8192 E256k8g8"), ("Hkv=8", "Hkv8"),
    ("blas=openblas-0.3.31-Haswell-pthreads", ""), ("L=2048", "L2048"),
])
def test_short_shape(shape, expected):
    assert kasv.short_shape(shape) == expected


@pytest.mark.parametrize("kernel, family", [
    ("attention.prefill", "prefill"), ("attention.decode.kv", "decode"), ("attention.paged_decode", "paged decode"),
    ("sampling.top_k", "top-k"), ("sampling.filter_top_p", "sample / top-p"), ("sampling.sample.top_p", "sample / top-p"),
    ("moe.route_dispatch.route", "route"), ("moe.route_dispatch.dispatch", "dispatch"),
    ("moe.route_dispatch.route_dispatch", "route + dispatch"), ("moe.permute_unpermute.unpermute", "permute / unpermute"),
    ("moe.layer", "MoE layer"), ("recurrent.selective_scan", "recurrent.selective_scan"),
])
def test_family_of(kernel, family):
    assert kasv.family_of(kernel) == family


def test_links_asv_publish_html_only_when_it_exists(tmp_path):
    assert kasv.publish_link(tmp_path) is None
    (tmp_path / ".asv" / "html").mkdir(parents=True)
    (tmp_path / ".asv" / "html" / "index.html").write_text("<html></html>")
    link = kasv.publish_link(tmp_path)
    assert "asv publish" in link and (tmp_path / ".asv" / "html" / "index.html").as_uri() in link
