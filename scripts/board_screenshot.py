"""Build the comparison board of the zoo and save a PNG screenshot of it (for README.md).

    .venv/bin/python scripts/board_screenshot.py [--task T] [--out board/] [--png benchmarks/results/board.png]

Drives Debian's `chromium` (apt-get install chromium; or the browser named by KDZOO_CHROMIUM) headless through
Playwright (pip package `playwright`, in kdzoo's `test` extra; Playwright's own browser download is not used).
The screenshot shows the first tab (its table sorted by the metric's value, descending, and its plots); it is
saved as a palette PNG to keep it small.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable: $KDZOO_CHROMIUM, else the first of `BROWSERS` on PATH; None if there is none."""
    env = os.environ.get("KDZOO_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(page_path: Path, png: Path, width: int = 1400, height: int = 1150) -> Path:
    """Open ``page_path`` in headless Chromium, sort the first tab by value (descending), and save the
    viewport as a palette PNG at ``png``."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise SystemExit("no Chromium found: apt-get install chromium (or set KDZOO_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_path.resolve().as_uri())
            section = page.locator("section.task:not([hidden])")
            header = section.locator("table.board th", has_text="value")
            header.click()
            header.click()  # the second click sorts descending: best first for higher-is-better metrics
            raw = page.screenshot(full_page=False)
        finally:
            browser.close()
    image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=256)
    png.parent.mkdir(parents=True, exist_ok=True)
    image.save(png, optimize=True)
    return png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", help="only this task's entries")
    p.add_argument("--out", default=None, help="the board's folder (default: a temporary one)")
    p.add_argument("--png", default=str(ROOT / "benchmarks" / "results" / "board.png"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import tempfile

    from zoo.board import build_board
    from zoo.comparison import select

    with tempfile.TemporaryDirectory() as tmp:
        board = build_board(select(task=args.task), args.out or tmp)
        for problem in board.problems:
            print(f"warning: {problem}", file=sys.stderr)
        png = screenshot(board.path, Path(args.png))
    print(f"{png}: {png.stat().st_size / 1e3:.0f} kB ({board.entries} entries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
