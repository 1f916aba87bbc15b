"""The comparison board: `zoo compare --html DIR` writes ``DIR/index.html``, one self-contained static page.

The page has a tab per task; in each, the quality-vs-cost plot of every data set (drawn by
`zoo.comparison.plot`, embedded as base64 PNG), a table of `zoo.comparison.comparison_rows` that sorts by
any column (click its header; numbers sort as numbers, a second click reverses) and filters (a text box,
and a select for data set, method and measured/reported), and each entry's card (metrics with units,
teacher, plain twin and gain, training record, the command that reproduces it, sha256 of its files),
opened by clicking the entry's name. Entries whose metrics their publisher reported (``metrics_source:
reported``) are marked as such in the table, the plot's caption and the card.

Nothing is fetched when the page is viewed: styles and the script are inlined, the images are data URLs,
and the page's Content-Security-Policy forbids every other source. Every text taken from a card is
escaped (`html.escape`), so a card cannot inject markup. An entry that cannot be shown (a card without a
usable value of its metric) or a plot that cannot be drawn is named, with the reason, at the top of the page
and in `Board.problems`; the rest of the board is still written. The file is written atomically.
"""
from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .comparison import COST_AXES, _millions, comparison_rows, plot
from .io import atomic_write_text
from .registry import ModelCard
from .tasks import task_spec

TITLE = "kdzoo comparison board"


@dataclass
class Board:
    """What `build_board` wrote: the page, how many entries it shows, and the problems it named."""

    path: Path
    entries: int
    problems: list[str] = field(default_factory=list)


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes (``<``, ``>``, ``&``, quotes)."""
    return html.escape("" if value is None else str(value), quote=True)


def check_out_dir(out_dir: str | Path) -> Path:
    """The board's folder, as a Path; it may not exist yet.

    Raises:
        NotADirectoryError: ``out_dir`` (or a parent of it) exists and is not a folder.
    """
    path = Path(out_dir)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            what = "it" if p == path else f"its parent {str(p)!r}"
            raise NotADirectoryError(f"the board's folder {str(path)!r}: {what} exists and is not a folder "
                                     "(give a folder; the board is written as index.html inside it)")
    return path


# ------------------------------------------------------------------------------------------- rows
def board_rows(cards: Iterable[ModelCard]) -> tuple[list[tuple[ModelCard, dict]], list[str]]:
    """Each card with its `comparison_rows` row, and the problems of the cards left out: those whose
    headline metric has no finite numeric value (each problem names the entry and the reason)."""
    kept: list[tuple[ModelCard, dict]] = []
    problems: list[str] = []
    for card in cards:
        name = getattr(card, "name", "?")
        try:
            row = comparison_rows([card])[0]
        except Exception as e:  # noqa: BLE001 - one bad card must not stop the board
            metrics = getattr(card, "metrics", None)
            reason = ("its card has no metrics" if not metrics else
                      f"its row could not be made ({type(e).__name__}: {e}; metrics: {', '.join(map(str, metrics))})")
            problems.append(f"entry {name!r} is left out of the board: {reason}")
            continue
        value = row["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"entry {name!r} is left out of the board: its card has no usable value of its metric "
                            f"{row['metric']!r} (got {value!r})")
            continue
        kept.append((card, row))
    return kept, problems


def plot_images(rows: list[dict], x: str = "params") -> tuple[list[tuple[str, str]], list[str]]:
    """The quality-vs-cost plots of one task's ``rows``, one per (data set, metric), as (caption, PNG data
    URL) pairs drawn by `zoo.comparison.plot`, and the problems of the plots that failed (naming the task,
    data set and entries, and the reason)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["metric"]), []).append(r)
    images, problems = [], []
    with tempfile.TemporaryDirectory(prefix="kdzoo-board-") as tmp:
        for i, ((dataset, metric), group) in enumerate(sorted(groups.items())):
            task = group[0]["task"]
            names = ", ".join(r["name"] for r in group)
            try:
                path = plot(group, Path(tmp) / f"plot{i}.png", x)
                data = base64.b64encode(path.read_bytes()).decode("ascii")
            except Exception as e:  # noqa: BLE001 - a failed plot leaves the rest of the board
                problems.append(f"plot of {task} / {dataset} / {metric} (entries: {names}) is left out: {e}")
                continue
            reported = [r["name"] for r in group if r["metrics_source"] == "reported"]
            caption = f"{task}: {metric} on {dataset} against {COST_AXES[x]} (log); Pareto front in orange"
            if reported:
                caption += f"; reported by their publishers, not measured by kdzoo: {', '.join(reported)}"
            images.append((caption, f"data:image/png;base64,{data}"))
    return images, problems


# -------------------------------------------------------------------------------------- formatting
def _metric_text(task: str, name: str, value: Any, direction: bool = True) -> str:
    """``value`` of metric ``name`` in its unit (``93.12%``), with "(lower is better)" where that holds."""
    info = task_spec(task).metric(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if info is None:
        return f"{value:.4g}"
    return info.format(value) + ("" if info.higher_is_better or not direction else " (lower is better)")


def _scale(row: dict) -> float:
    return 100.0 if row["unit"] == "%" else 1.0


def _value_text(row: dict) -> str:
    v = row["value"] * _scale(row)
    return f"{v:.2f}%" if row["unit"] == "%" else f"{v:.2f}" + (f" {row['unit']}" if row["unit"] else "")


def _plain(value: Any) -> str:
    """A card value (dict, list, number, text) as one line of text."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _link(url: str) -> str:
    """``url`` as a link when it is http(s), else as code; escaped either way."""
    if url.startswith(("https://", "http://")):
        return f'<a href="{esc(url)}" rel="noopener noreferrer">{esc(url)}</a>'
    return f"<code>{esc(url)}</code>"


def _report(card: ModelCard) -> tuple[str | None, str | None, str | None]:
    """A reported entry's (project, report URL, download URL), from its ``extra["reported"]`` (`zoo.reported`);
    None where the card does not say."""
    info = card.extra.get("reported") if isinstance(card.extra, dict) else None
    info = info if isinstance(info, dict) else {}

    def text(key: str) -> str | None:
        value = info.get(key)
        return value if isinstance(value, str) and value else None

    return text("project"), text("report_url"), text("download_url")


def _dl(items: list[tuple[str, str]]) -> str:
    """A definition list of (label, already-escaped HTML) pairs."""
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


# ------------------------------------------------------------------------------------------ the card
def render_card(card: ModelCard, row: dict, anchor: str) -> str:
    """One entry's card as a ``<details id=anchor>`` element: metrics with units, teacher, plain twin and
    gain, size and speed, training record, the command that reproduces it, files with sha256. Every card
    text is escaped."""
    reported = row["metrics_source"] == "reported"
    items: list[tuple[str, str]] = []
    if card.description:
        items.append(("description", esc(card.description)))
    items.append(("task / data set", esc(f"{card.task}, {card.dataset} ({card.split})")))
    items.append(("architecture / method", esc(f"{card.architecture}, {card.method}")))
    metrics = "<ul>" + "".join(f"<li><b>{esc(k)}</b> {esc(_metric_text(card.task, k, v))}"
                               + (" <i>(headline)</i>" if k == row["metric"] else "") + "</li>"
                               for k, v in card.metrics.items()) + "</ul>"
    if reported:
        project, report_url, download_url = _report(card)
        source_note = ("<p class=\"reported-note\">Reported by " + (esc(project) if project else "the publisher")
                       + ", <b>not measured by kdzoo</b>" + (f": {_link(report_url)}" if report_url else "") + "."
                       + (f" Download: {_link(download_url)}." if download_url else "") + "</p>")
    else:
        source_note = ("<p>Measured by kdzoo's evaluation (<code>zoo eval " + esc(card.name)
                       + "</code> measures it again).</p>")
    items.append(("metrics", metrics + source_note))
    if card.teacher:
        t = card.teacher
        tm = ", ".join(f"{k} {_metric_text(card.task, k, v)}" for k, v in (t.metrics or {}).items())
        items.append(("teacher", esc(t.name) + (f" ({esc(tm)})" if tm else "")
                      + (f", {esc(_millions(t.params))} params" if t.params else "")))
    if card.baseline:
        b = card.baseline
        twin = "; ".join(
            f"{m} " + (f"{_metric_text(card.task, m, s.get('mean'), False)}"
                       + (f" ± {_metric_text(card.task, m, s['std'], False)}" if "std" in s else "")
                       + f" (n={s.get('n', '?')})" if isinstance(s, dict) else str(s))
            for m, s in (b.get("metrics") or {}).items())
        gain = row["gain_over_twin"]
        gain_text = "-" if gain is None else f"{gain * _scale(row):+.2f}" + (" points" if row["unit"] == "%" else "")
        gap = row["gap_closed"]
        parts = [f"twin {b.get('name') or '(not in the zoo)'} ({b.get('method', 'plain')}): {twin}",
                 f"gain over the twin: {gain_text}" + (f", {gap * 100:.0f}% of the teacher-twin gap closed" if gap is not None else "")]
        for key in ("seeds", "budget", "table", "source"):
            if b.get(key) not in (None, "", [], {}):
                parts.append(f"{key}: {_plain(b[key])}")
        items.append(("plain twin", "<br>".join(esc(p) for p in parts)))
    lat = ", ".join(f"{k} {v:.2f} ms" for k, v in card.latency_ms.items())
    items.append(("size and speed", esc(f"{card.params:,} params, {_millions(card.flops)} FLOPs, "
                                        f"{_millions(row['macs'])} MACs" + (f"; CPU latency {lat}" if lat else "")
                                        + (f" ({card.latency_env})" if card.latency_env else ""))))
    tr = card.training
    if tr is not None:
        record = [f"hardware: {tr.hardware}", f"epochs: {tr.epochs}", f"seeds: {_plain(tr.seeds)}",
                  f"wall time: {tr.wall_time_s / 60:.1f} min" if isinstance(tr.wall_time_s, (int, float)) else f"wall time: {tr.wall_time_s}",
                  f"date: {tr.date}"]
        body = "<br>".join(esc(r) for r in record)
        if tr.notes:
            body += f"<p>{esc(tr.notes)}</p>"
        if tr.config:
            body += f"<details><summary>training config</summary><pre>{esc(_plain(tr.config))}</pre></details>"
        items.append(("training record", body))
        items.append(("command that reproduces it", f"<pre><code>{esc(tr.command)}</code></pre>"))
    else:
        who = f"trained by {esc(_report(card)[0] or 'its publisher')}, see the report" if reported else "not trained by kdzoo"
        items.append(("command that reproduces it", f"<i>no training record on the card</i> ({who}; load it with "
                                                     f"<code>zoo.load({esc(json.dumps(card.name))})</code>)"))
    items.append(("source", _link(card.source) + f" · license {esc(card.license)}"))
    if card.paper:
        items.append(("paper", esc(card.paper)))
    if card.files:
        items.append(("files", "<ul>" + "".join(f"<li><code>{esc(f.name)}</code> ({esc(f'{f.size:,}')} bytes) sha256 "
                                                f"<code class=\"sha\">{esc(f.sha256)}</code></li>" for f in card.files)
                      + "</ul>"))
    else:
        info = (card.extra or {}).get("reported") if isinstance(card.extra, dict) else None
        info = info if isinstance(info, dict) else {}
        prefix, how = info.get("sha256_prefix"), info.get("hash_source")
        items.append(("files", (f"sha256 prefix given by the publisher: <code class=\"sha\">{esc(prefix)}</code>"
                                if prefix else "no sha256 on the card") + (f" ({esc(how)})" if how else "")))
    if card.extra:
        items.append(("extra", "<details><summary>the card's extra fields (JSON)</summary><pre>"
                      + esc(json.dumps(card.extra, indent=1, default=str)) + "</pre></details>"))
    badge = '<span class="badge reported">reported</span>' if reported else '<span class="badge measured">measured</span>'
    return (f'<details class="card{" reported" if reported else ""}" id="{esc(anchor)}">'
            f"<summary><code>{esc(card.name)}</code> {badge} {esc(row['metric'])} {esc(_value_text(row))}</summary>"
            f"{_dl(items)}</details>")


# ----------------------------------------------------------------------------------------- the table
COLUMNS = (("name", "text"), ("metrics", "text"), ("data set", "text"), ("method", "text"), ("metric", "text"),
           ("value", "num"), ("vs twin", "num"), ("gap closed", "num"), ("params", "num"), ("MACs", "num"),
           ("CPU bs1 (ms)", "num"), ("teacher", "text"))


def _cell(text: str, sort: Any, html_text: str | None = None, wrap: bool = False) -> str:
    key = "" if sort is None else (repr(float(sort)) if isinstance(sort, (int, float)) else str(sort).lower())
    return (f'<td data-sort="{esc(key)}"' + (' class="wrap"' if wrap else "")
            + f">{html_text if html_text is not None else esc(text)}</td>")


def render_row(card: ModelCard, row: dict, anchor: str) -> str:
    """One table row (``<tr>``) of an entry; each cell's ``data-sort`` is what the column sorts by."""
    scale = _scale(row)
    value = row["value"] * scale
    gain = row["gain_over_twin"]
    gap = row["gap_closed"]
    lat = row["latency_ms"]
    reported = row["metrics_source"] == "reported"
    source_html = ('<span class="badge reported" title="reported by the publisher, not measured by kdzoo">reported</span>'
                   if reported else '<span class="badge measured" title="measured by kdzoo">measured</span>')
    metric = row["metric"] + ("" if row["higher_is_better"] else " (lower better)")
    cells = [
        _cell(row["name"], row["name"], f'<a href="#{esc(anchor)}" class="entry">{esc(row["name"])}</a>'),
        _cell(row["metrics_source"], row["metrics_source"], source_html),
        _cell(f"{row['dataset']} ({card.split})", row["dataset"]),
        _cell(row["method"], row["method"]),
        _cell(metric, metric),
        _cell(_value_text(row), value),
        _cell("-" if gain is None else f"{gain * scale:+.2f}", None if gain is None else gain * scale),
        _cell("-" if gap is None else f"{gap * 100:.0f}%", None if gap is None else gap * 100),
        _cell(_millions(row["params"]), row["params"]),
        _cell(_millions(row["macs"]), row["macs"]),
        _cell("-" if lat is None else f"{lat:.2f}", lat),
        _cell(row["teacher"] or "-", row["teacher"] or "", wrap=True),
    ]
    return (f'<tr data-name="{esc(row["name"])}" data-dataset="{esc(row["dataset"])}" data-method="{esc(row["method"])}"'
            f' data-source="{esc(row["metrics_source"])}"' + (' class="reported"' if reported else "") + ">"
            + "".join(cells) + "</tr>")


def _select(kind: str, label: str, values: Iterable[str]) -> str:
    options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(set(values)))
    return f'<label>{esc(label)} <select class="filter" data-key="{kind}"><option value="">all</option>{options}</select></label>'


def render_section(task: str, index: int, entries: list[tuple[ModelCard, dict, str]],
                   images: list[tuple[str, str]]) -> str:
    """One task's section: plots, filters, the sortable table and the entries' cards."""
    head = "".join(f'<th data-type="{kind}" tabindex="0" title="sort by {esc(name)}">{esc(name)}</th>' for name, kind in COLUMNS)
    rows = "\n".join(render_row(c, r, a) for c, r, a in entries)
    figures = "".join(f'<figure><img alt="{esc(cap)}" src="{src}"><figcaption>{esc(cap)}</figcaption></figure>'
                      for cap, src in images) or "<p><i>no plot for this task</i></p>"
    cards = "\n".join(render_card(c, r, a) for c, r, a in entries)
    filters = ('<div class="filters"><label>filter <input type="search" class="filter-text" '
               'placeholder="name, method, teacher, ..."></label>'
               + _select("dataset", "data set", (r["dataset"] for _, r, _ in entries))
               + _select("method", "method", (r["method"] for _, r, _ in entries))
               + _select("source", "metrics", ("measured", "reported"))
               + f'<span class="count">{len(entries)} of {len(entries)} entries</span></div>')
    return (f'<section class="task" id="task-{index}" data-task="{esc(task)}"><h2>{esc(task)}</h2>'
            f'{filters}<table class="board"><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>'
            f'<h3>Quality against cost</h3><div class="plots">{figures}</div>'
            f'<h3>Cards</h3><p class="hint">click an entry\'s name in the table, or a card below, to open it</p>'
            f'<div class="cards">{cards}</div></section>')


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1f24;background:#fafbfc}
header{padding:12px 20px;background:#24292f;color:#fff}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#d0d7de}
main{padding:8px 20px 40px}nav.tabs{display:flex;gap:4px;margin:12px 0;border-bottom:1px solid #d0d7de}
nav.tabs button{font:inherit;padding:6px 14px;border:1px solid #d0d7de;border-bottom:none;background:#eaeef2;cursor:pointer;border-radius:6px 6px 0 0}
nav.tabs button.active{background:#fff;font-weight:600}
.problems{background:#fff8c5;border:1px solid #d4a72c;padding:6px 14px;margin:10px 0;border-radius:6px}
.plots{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;background:#fff;border:1px solid #d0d7de;padding:6px;max-width:600px}
figure img{max-width:100%}figcaption{font-size:12px;color:#57606a}
.filters{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin:12px 0}.count{color:#57606a}
table.board{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
table.board th,table.board td{border:1px solid #d0d7de;padding:3px 7px;text-align:left;white-space:nowrap}
table.board td.wrap{white-space:normal;word-break:break-word;min-width:12em}
table.board th{background:#f0f3f6;cursor:pointer;user-select:none}
table.board th[aria-sort=ascending]::after{content:" \\25B2"}table.board th[aria-sort=descending]::after{content:" \\25BC"}
table.board tr.reported td{background:#fff5e6}
.badge{font-size:11px;padding:1px 6px;border-radius:9px;border:1px solid}.badge.measured{color:#1a7f37;border-color:#1a7f37}
.badge.reported{color:#bc4c00;border-color:#bc4c00;background:#fff1e5;font-weight:600}
details.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:6px 0;padding:4px 10px}
details.card.reported{border-left:4px solid #bc4c00}details.card summary{cursor:pointer}
.reported-note{color:#bc4c00}dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px}dt{font-weight:600;color:#57606a}dd{margin:0}
pre{white-space:pre-wrap;word-break:break-all;background:#f6f8fa;padding:6px;margin:2px 0}code.sha{word-break:break-all}
.hint{color:#57606a;font-size:12px}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var tabs = Array.prototype.slice.call(document.querySelectorAll("nav.tabs button"));
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.task"));
  function show(id) {
    tabs.forEach(function (b) { var on = b.getAttribute("data-target") === id;
      b.classList.toggle("active", on); b.setAttribute("aria-selected", on ? "true" : "false"); });
    sections.forEach(function (s) { s.hidden = s.id !== id; });
  }
  tabs.forEach(function (b) { b.addEventListener("click", function () { show(b.getAttribute("data-target")); }); });
  if (tabs.length) { show(tabs[0].getAttribute("data-target")); }

  function sortBy(table, col, th) {
    var heads = table.tHead.rows[0].cells;
    var asc = th.getAttribute("aria-sort") !== "ascending";
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
      if (x === "" || y === "") { return (x === "") - (y === ""); }  /* empty cells last, either way */
      var d = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return asc ? d : -d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function applyFilters(section) {
    var text = section.querySelector(".filter-text").value.trim().toLowerCase();
    var selects = section.querySelectorAll("select.filter");
    var rows = section.querySelectorAll("table.board tbody tr"), shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i], ok = !text || r.textContent.toLowerCase().indexOf(text) >= 0;
      for (var j = 0; j < selects.length && ok; j++) {
        var v = selects[j].value;
        ok = !v || r.getAttribute("data-" + selects[j].getAttribute("data-key")) === v;
      }
      r.hidden = !ok; if (ok) { shown++; }
    }
    section.querySelector(".count").textContent = shown + " of " + rows.length + " entries";
  }
  sections.forEach(function (section) {
    var table = section.querySelector("table.board");
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, col, th); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, col, th); } });
    });
    section.querySelector(".filter-text").addEventListener("input", function () { applyFilters(section); });
    Array.prototype.forEach.call(section.querySelectorAll("select.filter"), function (s) {
      s.addEventListener("change", function () { applyFilters(section); });
    });
  });
  function openCard() {
    var id = decodeURIComponent(location.hash.slice(1));
    var card = id ? document.getElementById(id) : null;
    if (!card || card.tagName !== "DETAILS") { return; }
    var section = card.closest("section.task");
    if (section) { show(section.id); }
    card.open = true;
    card.scrollIntoView({block: "nearest"});
  }
  window.addEventListener("hashchange", openCard);
  openCard();
})();
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def render_page(entries: list[tuple[ModelCard, dict]], images: dict[str, list[tuple[str, str]]],
                problems: list[str], title: str = TITLE, subtitle: str = "") -> str:
    """The whole page: a tab per task (in the order of their first entry), problems at the top."""
    tasks: dict[str, list[tuple[ModelCard, dict, str]]] = {}
    for i, (card, row) in enumerate(entries):
        tasks.setdefault(row["task"], []).append((card, row, f"card-{i}"))
    nav = "".join(f'<button type="button" role="tab" data-target="task-{i}">{esc(t)} ({len(es)})</button>'
                  for i, (t, es) in enumerate(tasks.items()))
    sections = "\n".join(render_section(t, i, es, images.get(t, [])) for i, (t, es) in enumerate(tasks.items()))
    trouble = ('<section class="problems" id="problems"><h2>Problems</h2><ul>'
               + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></section>") if problems else ""
    n_rep = sum(1 for _, r in entries if r["metrics_source"] == "reported")
    legend = (f"{len(entries)} entries; metrics <span class=\"badge measured\">measured</span> by kdzoo's evaluation, or "
              f"<span class=\"badge reported\">reported</span> by their publisher ({n_rep}), not measured by kdzoo")
    body = sections or "<p><i>no entries</i></p>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><main>{trouble}<p>{legend}</p>"
            f'<nav class="tabs" role="tablist">{nav}</nav>\n{body}\n</main><script>{SCRIPT}</script></body></html>\n')


def build_board(cards: Iterable[ModelCard], out_dir: str | Path, x: str = "params", title: str = TITLE,
                subtitle: str = "") -> Board:
    """Write the board of ``cards`` to ``out_dir/index.html`` (atomically), plots on the ``x`` cost axis
    (params, flops or latency). Bad cards and failed plots are named in `Board.problems` and on the page.

    Raises:
        NotADirectoryError: ``out_dir`` exists and is not a folder (checked before anything is drawn).
        ValueError: an unknown ``x``.
    """
    if x not in COST_AXES:
        raise ValueError(f"x must be one of {', '.join(COST_AXES)}, got {x!r}")
    out = check_out_dir(out_dir)
    entries, problems = board_rows(cards)
    images: dict[str, list[tuple[str, str]]] = {}
    for task in dict.fromkeys(r["task"] for _, r in entries):
        images[task], failed = plot_images([r for _, r in entries if r["task"] == task], x)
        problems.extend(failed)
    if not subtitle:
        from . import __version__

        subtitle = (f"kdzoo {__version__}: {len(entries)} entries; every number is read from the entries' cards "
                    "(`zoo compare`); a static page, nothing is fetched when it is viewed")
    page = render_page(entries, images, problems, title, subtitle)
    out.mkdir(parents=True, exist_ok=True)
    return Board(atomic_write_text(out / "index.html", page), len(entries), problems)
