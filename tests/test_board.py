"""The comparison board (`zoo compare --html DIR`, zoo.board): escaping, bad cards and plots named while the
rest is written, atomic writes, a refused file; and, in a real headless Chromium driven by Playwright, the
bundled zoo's board: every entry a row, sorting by a header reorders the rows, the filters hide rows, the tabs
and cards open, no console error and no request but the page itself."""
import copy
import dataclasses
import os
import shutil
import stat
from pathlib import Path

import pytest

import zoo
from zoo import board as board_mod
from zoo.board import build_board, check_out_dir
from zoo.io import atomic_write_text
from zoo.cli import main

EVIL = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def kd_card():
    return zoo.card("resnet8-kd.fmnist")


def _variant(card, **changes):
    return dataclasses.replace(copy.deepcopy(card), **changes)


def _evil(card):
    training = dataclasses.replace(card.training, command=f'zoo train "><img src=x onerror=alert(1)> {EVIL}')
    # (the name cannot carry markup: a zoo name is letters, digits and . _ + -, checked on every card)
    return _variant(card, name="evil", description=EVIL, paper="<b>bold</b> & co",
                    training=training, extra={"note": EVIL}, source="https://example.org/a.pth?x=<i>&y=\"q\"")


# ------------------------------------------------------------------------------------ no browser needed
def test_card_text_is_escaped(tmp_path, kd_card):
    page = build_board([_evil(kd_card)], tmp_path).path.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>bold</b>" not in page
    assert page.count("<script>") == 1  # the board's own script only
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert 'href="https://example.org/a.pth?x=&lt;i&gt;&amp;y=&quot;q&quot;"' in page
    with pytest.raises(ValueError, match="a zoo name is letters, digits"):
        _variant(kd_card, name="evil" + EVIL.replace(" ", ""))


def test_bad_cards_and_plots_are_named_and_the_rest_is_written(tmp_path, kd_card, monkeypatch):
    nan = _variant(kd_card, name="nan-metric", metrics={"top1": float("nan")})  # passes the card's range check
    empty = copy.deepcopy(kd_card)
    empty.name, empty.metrics = "no-metrics", {}
    no_latency = _variant(kd_card, name="no-latency", dataset="other-set", latency_ms={})
    fine = _variant(kd_card, name="fine")
    board = build_board([nan, fine, empty, no_latency], tmp_path / "b", x="latency")
    assert board.entries == 2
    assert any("'nan-metric'" in p and "no usable value of its metric 'top1'" in p for p in board.problems)
    assert any("'no-metrics'" in p and "has no metrics" in p for p in board.problems)
    assert any("other-set" in p and "no-latency" in p and "records its CPU latency" in p for p in board.problems)
    page = board.path.read_text(encoding="utf-8")
    assert 'id="problems"' in page and "nan-metric" in page and page.count("data:image/png;base64,") == 1
    assert 'data-name="fine"' in page and 'data-name="no-latency"' in page and 'data-name="nan-metric"' not in page

    # a plot that raises anything is named too
    def broken(rows, path, x):
        raise RuntimeError("matplotlib broke")

    monkeypatch.setattr(board_mod, "plot", broken)
    board = build_board([fine], tmp_path / "c")
    assert board.problems == ["plot of classification / fashion-mnist / top1 (entries: fine) is left out: matplotlib broke"]
    assert board.path.exists()


def test_reported_entries_are_marked(tmp_path, kd_card):
    info = {"project": "their<project>", "report_url": "https://example.org/report", "sha256_prefix": "abcd1234",
            "download_url": "https://example.org/theirs.pth"}
    reported = _variant(kd_card, name="theirs", metrics_source="reported", source="https://example.org/theirs.pth",
                        extra={"reported": info}, training=None, files=[])
    page = build_board([reported, kd_card], tmp_path).path.read_text(encoding="utf-8")
    assert '<tr data-name="theirs" data-dataset="fashion-mnist" data-method="kd" data-source="reported" class="reported">' in page
    assert "Reported by their&lt;project&gt;, <b>not measured by kdzoo</b>: <a href=\"https://example.org/report\"" in page
    assert "sha256 prefix given by the publisher: <code class=\"sha\">abcd1234</code>" in page
    assert "trained by their&lt;project&gt;, see the report" in page
    assert "reported by their publishers, not measured by kdzoo: theirs" in page  # the plot's caption
    assert 'data-source="measured">' in page


def test_writes_are_atomic(tmp_path, monkeypatch):
    import stat

    import zoo.io

    target = tmp_path / "index.html"
    atomic_write_text(target, "old")
    assert target.stat().st_mode & stat.S_IROTH  # a page to share: readable by others (umask 022), not mkstemp's 0600

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(zoo.io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["index.html"]  # no temporary file left


def test_atomic_writes_follow_links_and_refuse_special_files(tmp_path):
    """The rename that makes a write atomic would replace what is at the path: a symbolic link is followed
    (its target gets the new content, the link stays), and a FIFO or a folder is refused before anything is
    written (``zoo export --onnx some-fifo`` used to leave a regular file in its place)."""
    target = tmp_path / "target.onnx"
    target.write_text("old")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    with pytest.raises(ValueError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and sorted(os.listdir(tmp_path)) == ["fifo", "link.onnx", "target.onnx"]


def test_a_file_is_refused(tmp_path, kd_card, capsys):
    file = tmp_path / "board.html"
    file.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        build_board([kd_card], file)
    with pytest.raises(NotADirectoryError, match="its parent"):
        check_out_dir(file / "sub")
    assert main(["compare", "--task", "gan", "--html", str(file)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and file.read_text() == "keep me"


def test_cli_and_api_write_the_board(tmp_path, capsys):
    assert main(["compare", "--task", "gan", "--html", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "board: " in out and "(1 entries)" in out and (tmp_path / "cli" / "index.html").exists()
    rows = zoo.compare(task="gan", html=str(tmp_path / "api"))
    assert [r["name"] for r in rows] == ["cyclegan-vintagify"]
    assert 'data-name="cyclegan-vintagify"' in (tmp_path / "api" / "index.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------- a real browser
def _chromium():
    """Playwright's sync API and Debian's chromium, or a skip with the reason (a failure in CI, whose setup
    installs both)."""
    def missing(reason):
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; scripts/setup.sh installs it in CI")
        pytest.skip(reason)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -c constraints.txt playwright)")
    exe = os.environ.get("KDZOO_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if exe is None:
        missing("no chromium on PATH (apt-get install chromium, or set KDZOO_CHROMIUM)")
    return sync_playwright, exe


@pytest.fixture(scope="module")
def browser():
    sync_playwright, exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe)
        yield b
        b.close()


def _open(browser, path: Path):
    """A page at ``path`` with its console errors, page errors, dialogs and requests recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(path.resolve().as_uri())
    return page, seen


def _names(section):
    return section.locator("tbody tr:not([hidden])").evaluate_all("rows => rows.map(r => r.dataset.name)")


def test_the_board_in_a_headless_browser(browser, tmp_path):
    cards = zoo.list_models()
    board = build_board(cards, tmp_path / "board")
    assert board.problems == [] and board.entries == len(cards)
    page, seen = _open(browser, board.path)
    try:
        tasks = list(dict.fromkeys(c.task for c in cards))
        # every entry renders as a row, in its task's tab
        for i, task in enumerate(tasks):
            section = page.locator(f"section#task-{i}")
            assert section.get_attribute("data-task") == task
            assert sorted(section.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.name)")) == \
                sorted(c.name for c in cards if c.task == task)
        assert page.locator("table.board tbody tr").count() == len(cards)

        # tabs: the first is shown; a click on another shows it alone
        first, last = page.locator("section#task-0"), page.locator(f"section#task-{len(tasks) - 1}")
        assert first.is_visible() and (len(tasks) == 1 or not last.is_visible())
        page.locator("nav.tabs button").nth(len(tasks) - 1).click()
        assert last.is_visible() and (len(tasks) == 1 or not first.is_visible())
        page.locator("nav.tabs button").nth(0).click()

        # sorting: params numerically (as text "272474.0" < "75002.0"), ascending then descending; stable for ties
        section = first
        task_cards = {c.name: c for c in cards if c.task == tasks[0]}
        before = _names(section)
        params_th = section.locator("th", has_text="params")
        params_th.click()
        ascending = sorted(before, key=lambda n: task_cards[n].params)
        assert _names(section) == ascending and params_th.get_attribute("aria-sort") == "ascending"
        params_th.click()
        assert _names(section) == sorted(ascending, key=lambda n: -task_cards[n].params)
        assert params_th.get_attribute("aria-sort") == "descending"
        before = _names(section)
        section.locator("th", has_text="value").click()
        assert _names(section) == sorted(before, key=lambda n: task_cards[n].metrics[task_cards[n].headline])

        # filtering: the text box, then the method select; the count follows
        teachers = {c.teacher.name for c in task_cards.values() if c.teacher}
        measured = [n for n, c in task_cards.items() if c.metrics_source == "measured" and c.files and n not in teachers
                    and not any(n in m for m in task_cards if m != n)]  # a name no other entry's row contains
        target = max(measured, key=len)
        section.locator(".filter-text").fill(target)
        assert _names(section) == [target] and section.locator(".count").inner_text() == f"1 of {len(task_cards)} entries"
        section.locator(".filter-text").fill("")
        assert sorted(_names(section)) == sorted(task_cards)
        method = task_cards[target].method
        section.locator("select.filter[data-key=method]").select_option(method)
        assert sorted(_names(section)) == sorted(n for n, c in task_cards.items() if c.method == method)
        section.locator("select.filter[data-key=method]").select_option("")

        # a click on an entry's name opens its card
        section.locator("a.entry", has_text=target).click()
        page.wait_for_selector("details.card[open]", timeout=10_000)  # opened on the hashchange event, after the click
        card = page.locator("details.card[open]")
        assert card.count() == 1 and target in card.locator("> summary").inner_text()
        assert "command that reproduces it" in card.inner_text() and "sha256" in card.inner_text()

        assert seen["errors"] == [] and seen["dialogs"] == []
        assert all(u == board.path.resolve().as_uri() or u.startswith("data:") for u in seen["requests"]), seen["requests"]
    finally:
        page.close()


def test_card_markup_does_not_run_in_the_browser(browser, tmp_path, kd_card):
    board = build_board([_evil(kd_card)], tmp_path / "evil")
    page, seen = _open(browser, board.path)
    try:
        page.locator("a.entry").click()
        assert page.locator("script").count() == 1 and page.locator("details.card img").count() == 0
        assert EVIL in page.locator("details.card").inner_text()
        assert seen["errors"] == [] and seen["dialogs"] == []
    finally:
        page.close()


def test_an_atomic_write_keeps_the_file_mode_and_refuses_a_loop_of_links(tmp_path):
    """A breaker pass found a private 0600 file made 0644 by a rewrite, and a loop of links replaced by a file."""
    private = tmp_path / "secret.json"
    private.write_text("old")
    private.chmod(0o600)
    atomic_write_text(private, "new")
    assert private.read_text() == "new" and stat.S_IMODE(private.stat().st_mode) == 0o600
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(ValueError, match="is a loop of symbolic links"):
        atomic_write_text(tmp_path / "a", "x")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    (tmp_path / "gone").symlink_to(tmp_path / "missing-folder")
    with pytest.raises(ValueError, match="gone is a symbolic link to .*which does not resolve to a folder"):
        atomic_write_text(tmp_path / "gone" / "f.txt", "x")  # (a bare FileExistsError from mkdir)
    setuid = tmp_path / "tool"
    setuid.write_text("old")
    setuid.chmod(0o4755)
    atomic_write_text(setuid, "new")
    assert stat.S_IMODE(setuid.stat().st_mode) == 0o755  # the rewrite is the writer's file: no setuid bit
    dangling = tmp_path / "out.txt"
    dangling.symlink_to(tmp_path / "made.txt")  # a link to a file not yet made: the file is made, the link stays
    atomic_write_text(dangling, "x")
    assert dangling.is_symlink() and (tmp_path / "made.txt").read_text() == "x"
