"""Try the chat widget as a person would: JupyterLab under headless Chromium (issue 22).

    python tools/browser_check.py [--profile cpu] [--chromium /usr/bin/chromium]

Needs Chromium (``apt-get install chromium``) and ``pip install playwright`` (the ``browser``
extra); it drives the system Chromium, so ``playwright install`` is not needed.

It copies ``notebooks/executed/<profile>/07_chat_demo.ipynb`` (outputs cleared) into a
temporary folder, starts JupyterLab there, opens the notebook, runs all cells, and then, in the
widget: types five messages with plain-text titles and presses Enter, turns "only what I asked
for" off before the fifth, and checks that each reply appears, that a recommendation's response
names an item of its list, that the latency is shown ("answered in … s") and that the filter
note follows the toggle. It writes ``figures/chat_widget.png`` (the widget after the five
messages) and ``results/<profile>/browser_check.json`` (each message, reply, shown titles,
status line and check); the notebook copy and the server are removed. Exit status 1 when a
check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from crslib import report  # noqa: E402

PLACEHOLDER = "Type a message and press Enter…"
# (message, filter on?) — plain-text titles, one request kind each; the filter is turned off for
# the fourth and on again for the fifth
MESSAGES = [
    ("Hi! I loved The Shining (1980). Can you recommend a scary movie?", True),
    ("Something from the 80s maybe?", True),
    ("I don't like horror at all. A thriller? I liked Se7en", True),
    ("Do you have a comedy too? I liked Superbad (2007)", False),
    ("What about something for the whole family? My kids loved Frozen", True),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cleared_copy(src: Path, dst: Path) -> None:
    """The notebook without outputs, so what the browser shows comes from this run."""
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    dst.write_text(json.dumps(nb, indent=1))


def names_an_item(response: str, titles: list[str]) -> bool:
    """Whether a response names one of the shown titles (the year may be left out)."""
    low = response.lower()
    return any(re.sub(r"\s*\(\d{4}\)$", "", t).lower() in low for t in titles)


def check_turn(turn: dict) -> dict:
    """The checks of one typed message, from what the browser showed."""
    rec = turn["badge"].startswith("[REC]")
    return {"reply appeared": bool(turn["response"] or turn["titles"]),
            "latency shown": bool(re.search(r"answered in \d+\.\d+ s", turn["status"])),
            "recommendation names its item": (not rec) or names_an_item(turn["response"], turn["titles"]),
            "filter note follows the toggle": turn["filter_on"] or not turn["filter_note"]}


def run(profile: str, chromium: str, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    src = REPO / "notebooks" / "executed" / profile / "07_chat_demo.ipynb"
    if not src.exists():
        raise SystemExit(f"{src}: no executed notebook (run `make notebooks PROFILE={profile}`)")
    tmp = Path(tempfile.mkdtemp(prefix="crslib-browser-"))
    labconfig = tmp / ".jupyter" / "labconfig"  # no "get notified about Jupyter news?" toast
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    cleared_copy(src, tmp / "07_chat_demo.ipynb")
    port, token = free_port(), "crslib-browser-check"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(tmp / ".runtime")}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}",
         f"--ServerApp.root_dir={tmp}", f"--IdentityProvider.token={token}",
         "--LabApp.news_url=", "--ServerApp.open_browser=False", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"))
    turns, started = [], time.monotonic()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            url = f"http://127.0.0.1:{port}/lab/tree/07_chat_demo.ipynb?token={token}"
            for _ in range(60):  # the server takes a few seconds to listen
                try:
                    page.goto(url, timeout=10_000)
                    break
                except Exception:
                    time.sleep(1)
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-Toolbar", timeout=60_000)
            time.sleep(3)  # the kernel starts
            page.keyboard.press("Control+b")  # hide the file browser: the notebook gets the width
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
            box = page.get_by_placeholder(PLACEHOLDER)
            box.wait_for(state="visible", timeout=timeout_s * 1000)
            widget = page.locator(".jp-OutputArea-output").filter(has=box)
            status = widget.locator(".widget-html").last
            for message, filter_on in MESSAGES:
                toggle = widget.get_by_label("only what I asked for")
                if toggle.is_checked() != filter_on:
                    toggle.click()
                n = widget.locator(".crslib-assistant").count()
                t0 = time.monotonic()
                box.fill(message)
                box.press("Enter")
                widget.locator(".crslib-assistant").nth(n).wait_for(timeout=timeout_s * 1000)
                page.wait_for_function(
                    "el => /answered in|refused|type/i.test(el.innerText)",
                    arg=status.element_handle(), timeout=timeout_s * 1000)
                last = widget.locator(".crslib-assistant").nth(n)
                resp = last.locator(".crslib-response")
                turn = {"message": message, "filter_on": filter_on,
                        "badge": last.locator(".crslib-badge").inner_text(),
                        "response": resp.inner_text() if resp.count() else "",
                        "titles": last.locator(".crslib-recs tr td:nth-child(2)").all_inner_texts(),
                        "filter_note": (last.locator(".crslib-filter").inner_text()
                                        if last.locator(".crslib-filter").count() else ""),
                        "status": status.inner_text(),
                        "browser_seconds": round(time.monotonic() - t0, 2)}
                turn["checks"] = check_turn(turn)
                turns.append(turn)
                print(json.dumps(turn, ensure_ascii=False), flush=True)
            widget.scroll_into_view_if_needed()
            out = REPO / "figures" / "chat_widget.png"
            out.parent.mkdir(exist_ok=True)
            widget.screenshot(path=str(out))
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"profile": profile, "notebook": str(src.relative_to(REPO)), "chromium": chromium,
            "turns": turns, "all_checks_pass": all(all(t["checks"].values()) for t in turns),
            "screenshot": "figures/chat_widget.png",
            "seconds_total": round(time.monotonic() - started, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a step may wait")
    a = ap.parse_args()
    result = run(a.profile, a.chromium, a.timeout)
    report.write_json(result, REPO / "results" / a.profile / "browser_check.json")
    print("all checks pass:", result["all_checks_pass"])
    sys.exit(0 if result["all_checks_pass"] else 1)


if __name__ == "__main__":
    main()
