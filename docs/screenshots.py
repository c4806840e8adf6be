"""Regenerate the README's pictures from a real sweep: the report page (headless Chromium) and the terminal view.

    python docs/screenshots.py SWEEP_DIR [--method teal] [--budget 0.5]

SWEEP_DIR is a `ponder sweep` output with a converted model under models/; needs Chromium + chromedriver
(Debian: apt-get install chromium chromium-driver) and selenium. Writes docs/report.png and docs/terminal.svg.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

import ponder.report.terminal as terminal
from ponder.cli import main

DOCS = Path(__file__).parent


def report_png(sweep: Path, method: str, budget: float) -> Path:
    from selenium import webdriver

    page = sweep / "report" / "index.html"
    assert main(["report", str(sweep), "--method", method, "--budget", str(budget), "--tokens", "160"]) == 0
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--window-size=1200,2000", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options
    )
    try:
        driver.get(page.as_uri())
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1200, height + 400)
        driver.save_screenshot(str(DOCS / "report.png"))
    finally:
        driver.quit()
    return DOCS / "report.png"


def terminal_svg(sweep: Path, method: str, budget: float) -> Path:
    terminal.console = Console(record=True, width=100, force_terminal=True, color_system="truecolor")
    prompt = "Write a short story about a robot who learns to paint."
    argv = ["generate", str(sweep / "models" / method), prompt, "--budget", str(budget), "--show-compute"]
    assert main([*argv, "--max-new-tokens", "60", "--quiet"]) == 0
    terminal.console.save_svg(
        str(DOCS / "terminal.svg"), title=f"ponder generate ... --budget {budget} --show-compute"
    )
    return DOCS / "terminal.svg"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--method", default="teal")
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    print(report_png(args.sweep, args.method, args.budget))
    print(terminal_svg(args.sweep, args.method, args.budget))
