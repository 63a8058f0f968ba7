"""A real browser opens the report from disk and every image on it loads.

Headless Chromium (Debian's ``chromium``, which ``.ci/run`` installs when it
is missing) loads a copy of ``index.html`` with a small script appended; after
the page's load event the script writes into the DOM how many images decoded
(``naturalWidth > 0``) out of how many, and ``--dump-dom`` prints that DOM. The
copy also holds an ``<img>`` for every SVG the page links to, so the vector
figures are checked by the same browser. No server, no extra dependency.

Without Chromium the test fails under CI (``CI`` set) and is skipped locally.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scalelab.report.builder import build_report
from scalelab.report.registry import available_sections

from _page_refs import PageRefs  # tests/ helper module

pytestmark = pytest.mark.browser

CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (im) { return !(im.complete && im.naturalWidth > 0); })
                     .map(function (im) { return im.getAttribute("src"); });
  var out = document.createElement("pre");
  out.id = "scalelab-image-check";
  out.textContent = "IMAGECHECK " + JSON.stringify({total: images.length, loaded: images.length - broken.length,
                                                    broken: broken, title: document.title});
  document.body.appendChild(out);
});
</script>
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("headless Chromium is required in CI (Debian package 'chromium'); .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """The quick build of every section in this checkout.

    test_report.py builds it under the session's base folder first; when this file
    runs alone, it builds its own (kernels from a short built-in run).
    """
    shared = tmp_path_factory.getbasetemp() / "quick_report"
    if (shared / "index.html").is_file() and (shared / ".scalelab-manifest.json").is_file():
        return shared
    out = tmp_path_factory.mktemp("browser_report")
    repo = tmp_path_factory.mktemp("repo_without_asv")
    build_report(out, only=list(available_sections()), quick=True, stream=io.StringIO(), repo_root=repo)
    return out


def _run_chromium(browser: str, page: Path, profile: Path) -> str:
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--no-first-run", "--no-default-browser-check", "--mute-audio",
        f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def test_every_image_loads_in_chromium(browser, report_dir, tmp_path):
    out = report_dir
    page = (out / "index.html").read_text(encoding="utf-8")
    refs = PageRefs()
    refs.feed(page)
    assert refs.images, "the report shows no figures"
    assert len(refs.images) == len(list(out.glob("figures/*.png"))) == len(refs.svg_links)
    # The SVG twins as images too, hidden: a hidden <img> still loads and decodes.
    svg_imgs = "".join(f'<img style="display:none" src="{src}" alt="svg">' for src in refs.svg_links)
    check = out / "_browser_check.html"
    check.write_text(page.replace("</body>", svg_imgs + CHECK_SCRIPT + "</body>"), encoding="utf-8")
    try:
        dom = _run_chromium(browser, check, tmp_path / "profile")
    finally:
        check.unlink()
    match = re.search(r"IMAGECHECK (\{.*?\})</pre>", dom, flags=re.S)
    assert match, f"the check script did not run; chromium printed: {dom[:500]!r}"
    report = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert report["title"] == "scalelab report"
    assert report["total"] == len(refs.images) + len(refs.svg_links)
    assert report["broken"] == [], f"images that did not load: {report['broken']}"
    assert report["loaded"] == report["total"]
