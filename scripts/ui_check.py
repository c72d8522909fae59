"""Open the Dagster UI in a real (headless) browser: assets shown as materialized, and a screenshot.

    python scripts/ui_check.py --out outputs/ui            # after `make smoke` (or `make run`)

Starts `dagster-webserver` on 127.0.0.1 against $DAGSTER_HOME and the current profile, opens the asset
catalog in Debian's Chromium through Playwright (no browser download: /usr/bin/chromium), checks that
every asset of the code location shows "Materialized", and saves screenshots of the catalog, of the
lineage graph, of each asset group's graph (group_<name>.png) and, when it is materialized, of
`benchmark_report`'s page with its charts in the metadata (benchmark_report.png).

Dagster shows a first-visit "Join the Dagster community" dialog on localhost one second after the page
loads; the browser starts with the local-storage entry that Dagster writes when it is dismissed
(``communityNux``), and before each screenshot the script checks that no dialog covers the page (exit 3
naming the screenshot and the dialog's text otherwise). Exit code 0 when every asset is materialized.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_webserver(port: int, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dagster_webserver", "-m", "orchestration.definitions", "-h", "127.0.0.1",
           "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"dagster-webserver did not answer on 127.0.0.1:{port} within 120 s")


def rows_materialized(text: str, asset_names: list[str], all_names: list[str] | None = None) -> dict[str, bool]:
    """Read the catalog's rendered text: each asset's row (its name up to the next asset's name) says
    Materialized. ``all_names``: every asset of the location (row boundaries), default ``asset_names``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    starts = {name: lines.index(name) for name in (all_names or asset_names) if name in lines}
    bounds = sorted(starts.values()) + [len(lines)]
    shown = {}
    for name in asset_names:
        if name not in starts:
            shown[name] = False
            continue
        i = starts[name]
        row = lines[i:bounds[bounds.index(i) + 1]]
        shown[name] = "Materialized" in row and not any("Never materialized" in x for x in row)
    return shown


# Dagster's CommunityNux reads this key (JSON) and stays closed when it is set, as after "Skip".
SUPPRESS_NUX = "window.localStorage.setItem('communityNux', JSON.stringify('1'));"
NUX_DELAY_MS = 1500  # the dialog opens 1 s after the page renders: look later than that
DIALOGS = '[role="dialog"]:visible, [class*="overlay-backdrop"]:visible'


class CoveredError(RuntimeError):
    """A dialog covers the page a screenshot is about to show."""


def covering_dialogs(page) -> list[str]:
    """The text (first 80 characters) of every visible dialog or modal backdrop on the page."""
    page.wait_for_timeout(NUX_DELAY_MS)
    found = page.locator(DIALOGS)
    return [(found.nth(i).inner_text() or "(a modal backdrop)").strip()[:80] for i in range(found.count())]


def screenshot(page, path: Path, **kwargs) -> Path:
    """A screenshot of what a person sees: refused (`CoveredError`) while a dialog covers the page."""
    covering = covering_dialogs(page)
    if covering:
        raise CoveredError(f"{path.name}: a dialog covers the page: {' | '.join(covering)}")
    page.screenshot(path=str(path), **kwargs)
    return path


REPORT_ASSET = "benchmark_report"
REPORT_CHARTS = "benchmark_charts"  # the metadata entry with the synthetic split's good/same/bad charts


def report_page(page, port: int, out: Path) -> list[Path]:
    """`benchmark_report`'s page (its metadata table), then its charts opened from the metadata.

    Markdown metadata opens in Dagster's own dialog: that one is what the second screenshot shows, and it
    must hold rendered chart images (not broken ones)."""
    page.goto(f"http://127.0.0.1:{port}/assets/{REPORT_ASSET}", wait_until="networkidle")
    page.wait_for_selector(f"text={REPORT_CHARTS}", timeout=60_000)
    shots = [screenshot(page, out / f"{REPORT_ASSET}.png", full_page=True)]
    row = page.locator("tr", has_text=REPORT_CHARTS).first
    row.get_by_text("Show Markdown").click()
    dialog = page.locator('[role="dialog"]:visible').first
    dialog.locator("img").first.wait_for(timeout=30_000)
    widths = dialog.locator("img").evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    if not widths or min(widths) == 0:
        raise CoveredError(f"{REPORT_ASSET}: {REPORT_CHARTS} shows no rendered chart (image widths {widths})")
    page.wait_for_timeout(500)
    dialog.screenshot(path=str(out / f"{REPORT_ASSET}_charts.png"))
    shots.append(out / f"{REPORT_ASSET}_charts.png")
    return shots


LOCATION = "orchestration.definitions"  # the code location `-m orchestration.definitions` serves
GROUPS = ("datasets", "models", "reward_model", "rl", "evaluation")


def check_ui(port: int, asset_names: list[str], out: Path, all_names: list[str] | None = None) -> dict[str, bool]:
    """{asset: shown as materialized} read from the rendered catalog; screenshots into ``out``."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1400})
        context.add_init_script(SUPPRESS_NUX)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/assets", wait_until="networkidle")
        page.wait_for_selector("text=Materialized", timeout=60_000)
        deadline = time.time() + 30  # statuses stream in row by row
        while True:
            shown = rows_materialized(page.inner_text("body"), asset_names, all_names)
            if all(shown.values()) or time.time() > deadline:
                break
            page.wait_for_timeout(1000)
        screenshot(page, out / "catalog.png", full_page=True)
        page.goto(f"http://127.0.0.1:{port}/asset-groups", wait_until="networkidle")
        page.wait_for_timeout(3000)
        screenshot(page, out / "lineage.png")
        for group in GROUPS:  # each group's graph expanded: the assets, their status and checks
            page.goto(f"http://127.0.0.1:{port}/locations/{LOCATION}/asset-groups/{group}", wait_until="networkidle")
            page.wait_for_timeout(2000)
            screenshot(page, out / f"group_{group}.png")
        if shown.get(REPORT_ASSET):
            report_page(page, port, out)
        browser.close()
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/ui", help="screenshots go here")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--assets", default="", help="comma-separated assets to expect (default: all)")
    args = parser.parse_args(argv)
    if not chromium_path():
        print("chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve()))
    from orchestration.definitions import defs

    all_names = sorted(k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys())
    names = [n for n in args.assets.split(",") if n] if args.assets else all_names
    port = args.port or free_port()
    server = start_webserver(port, dict(os.environ))
    try:
        shown = check_ui(port, names, Path(args.out), all_names)
    except CoveredError as e:
        print(f"not what a person sees: {e}")
        return 3
    finally:
        server.terminate()
        server.wait(timeout=30)
    missing = [n for n, ok in shown.items() if not ok]
    print(f"{len(names) - len(missing)}/{len(names)} assets shown as materialized; screenshots in {args.out}")
    if missing:
        print("not materialized in the UI:", ", ".join(missing))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
