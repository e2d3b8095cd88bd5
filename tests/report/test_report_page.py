"""`nnunet-medaka report` on a synthetic run folder, checked in a real headless Chromium.

How the browser check works (no DevTools client needed):

1. a *probe copy* of the page (same folder, so relative links resolve the same) gets a small script at the top of
   <head> that records console.error calls, script errors and resource load errors (a capturing ``error`` listener
   on window), and, on the window's ``load`` event, every <img> whose ``naturalWidth`` is 0; it writes them as JSON
   into a <pre id="probe">. ``chromium --headless --dump-dom`` prints the DOM after the load event, so the test
   reads the browser's own verdict on every image; the report itself has no script;
2. the *unmodified* page is loaded with ``--enable-logging=stderr --v=0 --dump-dom``: Chromium writes every console
   message as an ``INFO:CONSOLE`` line; a page without scripts must log none. The dumped DOM's <img> sources are
   checked to be files inside the report folder, and the page to hold no script and no external link;
3. ``--screenshot`` writes a PNG of the page (1200×3000).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from report_run_folder import CASES, CHROMIUM_FLAGS, make_experiment_folder
from nnunet_medaka.cli import main
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.report import build_report

PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__problems.push(t && t.tagName ? 'resource ' + t.tagName + ' ' + (t.src || t.href) : 'script ' + e.message);
}, true);
var __error = console.error;
console.error = function () { window.__problems.push('console ' + Array.prototype.join.call(arguments, ' '));
  __error.apply(console, arguments); };
window.addEventListener('load', function () {
  var broken = [];
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (!img.complete || img.naturalWidth === 0) broken.push(img.getAttribute('src'));
  }
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({images: document.images.length, broken: broken, problems: window.__problems});
  document.body.appendChild(pre);
});
</script>"""


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.scripts, self.links, self.text = [], 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src"))
        if tag == "script":
            self.scripts += 1
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def _chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = Path(tmp) / f"profile-{time.monotonic_ns()}"  # a fresh profile per call
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)
    shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def browse(chromium: str, page: Path, tmp: Path, screenshot: Path) -> dict:
    """What a headless Chromium makes of the page: the probe's verdict, console lines, the DOM, a screenshot."""
    probe = page.with_name("_probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    try:
        dom = _chromium(chromium, tmp, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    finally:
        probe.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe never ran: no load event?\n" + dom[-2000:]
    verdict = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                         .replace("&amp;", "&"))
    plain = _chromium(chromium, tmp, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                      "--dump-dom", page.as_uri())
    console = [line for line in plain.stderr.splitlines() if ":CONSOLE" in line]
    parsed = _Dom()
    parsed.feed(plain.stdout)
    _chromium(chromium, tmp, "--window-size=1200,3000", f"--screenshot={screenshot}", page.as_uri())
    return {"verdict": verdict, "console": console, "dom": parsed}


def _check_page(chromium: str, page: Path, tmp: Path, expected_images: int) -> _Dom:
    screenshot = tmp / f"{page.parent.name}-screenshot.png"
    seen = browse(chromium, page, tmp, screenshot)
    verdict, dom = seen["verdict"], seen["dom"]
    assert verdict["images"] == expected_images == len(dom.images), (verdict, dom.images)
    assert verdict["broken"] == [], f"images the browser could not show: {verdict['broken']}"
    assert verdict["problems"] == [], f"errors while loading: {verdict['problems']}"
    assert seen["console"] == [], f"console messages: {seen['console']}"
    folder = page.parent.resolve()
    for src in dom.images:
        assert not urlparse(src).scheme and not src.startswith("/"), f"not a relative link: {src}"
        target = (folder / unquote(src)).resolve()
        assert target.is_file() and folder in target.parents, src
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert dom.scripts == 0, "the report needs no script"
    assert all(not urlparse(link).scheme for link in dom.links), [l for l in dom.links if urlparse(l).scheme]
    assert screenshot.is_file() and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000, "screenshot suspiciously small (blank page?)"
    print(f"screenshot: {screenshot}")
    return dom


def test_report_renders_in_headless_chromium(run_folder, chromium, tmp_path):
    page = build_report(run_folder, progress=False)
    assert page == run_folder / "report" / "index.html"
    manifest = json.loads((page.parent / "report.json").read_text())
    assert manifest["missing"] == [] and manifest["cases_shown"] == 3 and manifest["finished"]
    # 2 run plots + 4 quality plots + 3 learning curves + 3 thumbnails
    dom = _check_page(chromium, page, tmp_path, expected_images=12)
    text = " ".join(dom.text)
    assert "swim <bladder> & co" in text and "fish&01" in text  # escaped in the source, shown as written
    assert "<bladder>" not in page.read_text()
    html = page.read_text()
    # ranked by mean predicted IoU: fish&01 (0.88), fish_02 (0.575), fish_03 (0.41)
    assert html.index("fish&amp;01") < html.index("fish_02") < html.index("fish_03")
    assert "Showing 3 of 3 cases" in html and "Δ IoU" in html and "+0.020" in html
    assert "teacher fold_1" in html and "student fold_0" in html and "student-dataset" in html
    assert "n/a" in html  # fish_03 has no true IoU
    assert not list(run_folder.glob(".report.tmp-*")), "temporary folder left behind"


def test_unfinished_run_reports_what_exists_and_what_is_missing(run_folder, chromium, tmp_path):
    (run_folder / "results.json").unlink()
    (run_folder / "pseudolabels" / "pseudolabels.csv").unlink()  # only one finished case record
    shutil.rmtree(run_folder / "quality")
    (run_folder / "overlays.png").unlink()
    state = json.loads((run_folder / "run_state.json").read_text())
    for stage in ("student", "evaluate"):
        del state["stages"][stage]
    (run_folder / "run_state.json").write_text(json.dumps(state))
    page = build_report(run_folder, tmp_path / "review", progress=False)
    html = page.read_text()
    manifest = json.loads((page.parent / "report.json").read_text())
    missing = " | ".join(manifest["missing"])
    assert not manifest["finished"] and manifest["cases_shown"] == 1
    for words in ("student, evaluate not done", "quality/evaluation", "overlays.png", "test scores",
                  "shown from 1 finished case records"):
        assert words in missing, (words, missing)
    assert "not finished" in html and "No test scores yet" in html
    # without results.json the models are found through run_state.json: teacher's 2 folds + iou plot + 1 case
    _check_page(chromium, page, tmp_path, expected_images=4)


def test_cap_rebuild_cli_and_refusals(run_folder, tmp_path, capsys):
    assert main(["report", str(run_folder), "--max-cases", "2", "--no-progress"]) == 0
    page = run_folder / "report" / "index.html"
    assert str(page) in capsys.readouterr().out
    html = page.read_text()
    assert "Showing 2 of 3 cases (capped at 2" in html and "fish_03" not in html.split('id="quality"')[0].split(
        "Ranked by")[1]
    assert len(list((page.parent / "cases").glob("*.png"))) == 2
    stale = page.parent / "stale.txt"
    stale.write_text("from an earlier report")
    build_report(run_folder, max_cases=0, progress=False)  # replaced as a whole
    assert not stale.exists() and not (page.parent / "cases").exists()
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MedakaError, match="not an earlier report"):
        build_report(run_folder, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(MedakaError, match="not a run folder"):
        build_report(tmp_path / "precious", tmp_path / "elsewhere", progress=False)
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(MedakaError, match="max_cases"):
        build_report(run_folder, max_cases=-1)


def test_moved_run_folder_still_reports(run_folder, tmp_path):
    """A run folder moved elsewhere still reports: recorded paths that no longer exist fall back to the folder."""
    moved = tmp_path / "moved_run"
    shutil.copytree(run_folder, moved)
    shutil.rmtree(run_folder / "pseudolabels")
    shutil.rmtree(run_folder / "quality")
    page = build_report(moved, progress=False)
    manifest = json.loads((page.parent / "report.json").read_text())
    assert manifest["cases_shown"] == len(CASES) and manifest["missing"] == []


def test_experiment_report_renders_in_headless_chromium(chromium, tmp_path):
    exp = make_experiment_folder(tmp_path / "e")
    page = build_report(exp, progress=False)
    assert page == exp / "report" / "index.html"
    manifest = json.loads((page.parent / "report.json").read_text())
    assert manifest["kind"] == "experiment" and manifest["units"] == ["f1/s0", "f0.5/s0"]
    assert manifest["cases"] == {"f1/s0": 3, "f0.5/s0": 0}
    # the heat map; unit f1/s0: 4 quality plots, 2 learning curves, 3 thumbnails; unit f0.5/s0: 1 learning curve
    dom = _check_page(chromium, page, tmp_path, expected_images=11)
    text = " ".join(dom.text)
    html = page.read_text()
    assert "Fraction 1, seed 0" in text and "Fraction 0.5, seed 0" in text and "swim <bladder> & co" in text
    assert "(a) Does the full method (pseudo-qc-kd) beat the stronger fair baseline (teacher) by more than the noise?" in text
    assert "Fraction 0.5, seed 0: pseudo-labels: no pseudolabels folder yet" in text  # said, not hidden
    assert html.index("Fraction 1, seed 0</h2>") < html.index("fish&amp;01") < html.index("Fraction 0.5, seed 0</h2>")
    assert "pseudo-qc-kd" in text and "+0.020" in text  # the row and its difference to the teacher
    # a case pseudo-labeled in several units gets one picture per unit: each unit has its own folder
    assert all(src.startswith(("f1_s0/", "f0.5_s0/", "iou_heatmap")) for src in dom.images)


def test_run_with_rounds_shows_each_round_and_the_chosen_one(run_folder, tmp_path):
    """A run of ``rounds=3`` whose third round stopped: the page tables every round, marks the round the out-of-fold
    evidence chose, says why the stopped one did not run, and shows the rounds plot."""
    from report_run_folder import _png

    run = tmp_path / "rounds_run"
    shutil.copytree(run_folder, run)
    settings = json.loads((run / "run_settings.json").read_text())
    (run / "run_settings.json").write_text(json.dumps({**settings, "rounds": 3}))
    test = lambda iou: {"Dice": round(2 * iou / (1 + iou), 4), "IoU": iou}
    reason = "round 2's students' out-of-fold Dice 0.8010 vs their teacher's 0.8050: a gain of -0.0040, not more than 0"
    (run / "rounds.json").write_text(json.dumps({
        "rounds": [{"round": 0, "model": "teacher", "ran": True, "oof_dice": 0.79, "test": test(0.66)},
                   {"round": 1, "model": "r1", "ran": True, "oof_dice": 0.805, "test": test(0.672), "reason": "own"},
                   {"round": 2, "model": "r2", "ran": True, "oof_dice": 0.801, "test": test(0.69), "reason": "ran"},
                   {"round": 3, "model": "r3", "ran": False, "reason": reason}],
        "chosen_round": 1, "baseline": "teacher", "baseline_test": test(0.66), "min_gain": 0.0,
        "scores": {"teacher": test(0.66), "supervised": test(0.65), "student": test(0.672)}}))
    _png(run / "rounds.png", "rounds")
    html = build_report(run, progress=False).read_text()
    section = html[html.index('<h2 id="rounds">'):html.index('<h2 id="pseudo">')]
    assert "<b>round 1 students</b>" in section and "chosen by the out-of-fold evidence" in section
    assert section.count("chosen by the out-of-fold evidence") == 1  # round 2 tested higher, but was not chosen
    assert "stopped</span>: " + reason.replace("'", "&#x27;") in section
    assert "<td>0.8050</td><td>0.672</td>" in section and "<td>0.8010</td><td>0.690</td>" in section
    assert 'src="rounds.png"' in section or "rounds.png" in section
    assert (run / "report" / "rounds.png").is_file()
    # a run of one round has no such section
    assert '<h2 id="rounds">' not in build_report(run_folder, tmp_path / "plain", progress=False).read_text()
