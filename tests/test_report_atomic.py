"""The report as a whole: swapped in atomically, cleaned up on SIGTERM, one build per folder.

A stub section builder (a table and a line of text per section) keeps these
fast; they test the builder's file handling, not the sections.
"""

import io
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from scalelab.cli.cli import main
from scalelab.report.builder import build_report
from scalelab.report.registry import SECTION_NAMES
from scalelab.report.section import Section, TableItem, TextItem
from scalelab.report.staging import ReportBusyError, output_lock

TWO = list(SECTION_NAMES[:2])

SCRIPT = """
import io, os, signal, sys
import pandas as pd
from scalelab.report.builder import build_report
from scalelab.report.section import Section, TableItem, TextItem
out, version, kill, names = sys.argv[1], sys.argv[2], sys.argv[3] == "kill", sys.argv[4:]

def builder(spec, ctx):
    if kill and spec.name != names[0]:  # the first section has finished and been rendered
        os.kill(os.getpid(), signal.SIGTERM)
    return spec.title, Section(spec.title, [TableItem("t", pd.DataFrame({"v": [version]}), "c"),
                                            TextItem(f"version {version}")])

build_report(out, only=names, builder=builder, stream=io.StringIO())
"""


def _stub_builder(version, delay=0.0):
    def builder(spec, ctx):
        time.sleep(delay)
        return spec.title, Section(spec.title, [TableItem("t", pd.DataFrame({"v": [version]}), "c"),
                                                TextItem(f"version {version}")])
    return builder


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_script(out, version, mode):
    return subprocess.run([sys.executable, "-c", SCRIPT, str(out), version, mode, *TWO],
                          capture_output=True, text=True, timeout=300)


def test_sigterm_after_one_section_leaves_the_old_report_whole(tmp_path):
    out = tmp_path / "report"
    assert _run_script(out, "old", "run").returncode == 0
    before = _snapshot(out)
    assert any(b"version old" in body for body in before.values())

    scratch_before = set(Path(tempfile.gettempdir()).glob("scalelab-report-*"))
    proc = _run_script(out, "new", "kill")
    assert proc.returncode != 0 and "ReportInterrupted" in proc.stderr
    assert _snapshot(out) == before  # no new CSV beside the old pages
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.scalelab-lock", "report"]  # no staging left
    assert set(Path(tempfile.gettempdir()).glob("scalelab-report-*")) <= scratch_before


def test_stale_staging_and_scratch_are_swept(tmp_path):
    out = tmp_path / "report"
    stale = tmp_path / ".report.scalelab-stage-1-dead"
    (stale / "figures").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    scratch = Path(tempfile.gettempdir()) / f"scalelab-report-{int(dead.stdout)}-stale"
    scratch.mkdir(exist_ok=True)
    build_report(out, only=TWO, builder=_stub_builder("v"), stream=io.StringIO())
    assert not stale.exists() and not scratch.exists()


def test_new_report_replaces_the_old_and_keeps_foreign_files(tmp_path):
    out = tmp_path / "report"
    build_report(out, only=TWO, builder=_stub_builder("one"), stream=io.StringIO())
    (out / "notes.txt").write_text("mine")
    (out / "figures").mkdir()
    (out / "figures" / "my.png").write_bytes(b"x")
    result = build_report(out, only=TWO[:1], builder=_stub_builder("two"), stream=io.StringIO())
    files = _snapshot(out)
    assert files["notes.txt"] == b"mine" and files["figures/my.png"] == b"x"
    assert not any(b"version one" in body for body in files.values())
    assert result.removed == [f"data/{TWO[1]}_t.csv"]
    assert not (out / f"data/{TWO[1]}_t.csv").exists()


def test_second_build_into_a_locked_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "report"
    with output_lock(out.resolve()):
        with pytest.raises(ReportBusyError, match="another scalelab report"):
            build_report(out, only=TWO, builder=_stub_builder("x"), stream=io.StringIO())
        assert main(["report", "--out", str(out), "--only", TWO[0]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another scalelab report is writing to" in err
    assert not out.exists()


def test_two_concurrent_builds_never_interleave(tmp_path):
    out = tmp_path / "report"
    outcomes = {}

    def run(version):
        try:
            build_report(out, only=TWO, builder=_stub_builder(version, delay=0.3), stream=io.StringIO())
            outcomes[version] = "built"
        except ReportBusyError:
            outcomes[version] = "busy"

    threads = [threading.Thread(target=run, args=(v,)) for v in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["built", "busy"]
    winner = next(v for v, o in outcomes.items() if o == "built")
    files = _snapshot(out)
    for name in TWO:
        assert files[f"data/{name}_t.csv"] == f"v\n{winner}\n".encode()
    assert f"version {winner}".encode() in files["report.md"]


@pytest.mark.parametrize("argv", [["report", "--out", ""], ["report", "--out", "  "]])
def test_empty_out_is_refused(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="empty"):
        build_report("", only=TWO, builder=_stub_builder("x"), stream=io.StringIO())
