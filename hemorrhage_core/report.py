"""One-click report for the people who decide: a standalone HTML file (and a PDF) that opens with a summary
(what was changed, the damage in the paper's levels, the share a remedy recovered, the thresholds of any sweep,
one sentence of verdict: report_summary.py), then the charts, each captioned with the settings behind it, and
ends with an appendix of the measurement settings, specs and versions.

The HTML inlines plotly.js once, so it opens offline with interactive charts. The PDF is the same report with
every chart rendered to SVG by kaleido (vector: sharp at any print size) and printed by headless Chromium (the
browser kaleido already needs). `chart_images` gives the same charts as PNGs at twice their pixels.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from . import charts, report_summary
from .errors import HemlabError
from .metric_names import label
from .paths import PROJECT_ROOT
from .runner import RunResult
from .specs import CODE_VERSION, MODIFICATIONS

log = logging.getLogger(__name__)

_PACKAGES = ("torch", "transformers", "plotly", "duckdb", "streamlit")
_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@cache
def code_version() -> dict[str, str]:
    """What produced the numbers: the metric code version, the git commit (and whether the tree was dirty) when
    the project is a checkout, and the versions of the libraries that compute or draw them."""
    out = {"hemorrhage_lab_code": CODE_VERSION}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        out["git_commit"] = commit + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown (not a git checkout)"
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _family(result: RunResult) -> str:
    fams = dict.fromkeys(getattr(MODIFICATIONS.get(m.kind), "family", "other") for m in result.spec.mods)
    return "+".join(fams) or "original"


def run_names(results: list[RunResult]) -> list[str]:
    """A unique display name per run: its label, plus model / corpus / budget where labels collide."""
    names = [r.spec.label() for r in results]
    if len(set(names)) < len(names):
        names = [
            f"{n} · {r.spec.model} · {r.settings.get('corpus')} · {r.settings.get('tokens')} tok"
            for n, r in zip(names, results, strict=True)
        ]
    if len(set(names)) < len(names):
        names = [f"{n} · {r.run_key[:6]}" for n, r in zip(names, results, strict=True)]
    return names


def default_figures(results: list[RunResult]) -> list[tuple[str, go.Figure]]:
    """The charts a report shows for these runs: headline metrics compared, the layer cascade overlaid, the
    KL distributions, and the attention heatmap of each run (capped at four)."""
    names = run_names(results)
    fams = [_family(r) for r in results]
    wide = pd.DataFrame(
        [
            {"label": n, "family": f, "model": r.spec.model, **r.metrics}
            for n, f, r in zip(names, fams, results, strict=True)
        ]
    )
    layers = pd.concat(
        [r.layers.assign(run=n, family=f) for n, f, r in zip(names, fams, results, strict=True)],
        ignore_index=True,
    )
    hists = pd.concat(
        [r.kl_hist.assign(run=n, family=f) for n, f, r in zip(names, fams, results, strict=True)],
        ignore_index=True,
    )
    figures = [
        ("Headline metrics", charts.metric_bars_chart(wide, ("ppl_ratio", "kl_mean", "top1_agreement"))),
        (
            "Layer cascade",
            charts.cascade_chart(layers, ["hidden_rel_error", "hidden_cosine", "hidden_sqnr_db"]),
        ),
        ("KL distribution", charts.kl_cdf_chart(hists)),
    ]
    if len(results) == 1:
        r = results[0]
        figures.insert(1, ("Perplexity", charts.perplexity_chart(r.metrics, modified_label=names[0])))
    for n, r in list(zip(names, results, strict=True))[:4]:
        if r.spec.mods and not r.spec.touches_weights:
            # Decoding only: attention is the original's (zero by construction); what the sampler changes is not.
            figure = charts.decoding_chart(
                r.metrics, top_k=r.spec.probe.top_k, modified_label=n, title=f"What the sampler changes — {n}"
            )
            figures.append((f"Decoding measures — {n}", figure))
        else:
            figures.append(
                (
                    f"Attention disruption — {n}",
                    charts.attention_heatmap(r.heads, title=f"Attention JS — {n}"),
                )
            )
    return figures


def caption(results: list[RunResult]) -> str:
    """The settings under every chart of the report: model(s), corpus, window, tokens and the code version that
    measured them."""
    seen = dict.fromkeys(
        f"{r.spec.model} · corpus {r.settings.get('corpus')} · window {r.settings.get('window')} · "
        f"{r.settings.get('tokens')} tokens · code v{r.settings.get('code_version', CODE_VERSION)}"
        for r in results
    )
    return "Measured on " + "; ".join(seen) + " · Hemorrhage Lab"


def chart_images(results: list[RunResult], *, scale: float = 2) -> dict[str, bytes]:
    """file name -> PNG of every chart of the report, at `scale` times its pixels with the settings written under
    it (for slides and papers)."""
    text = caption(results)
    out = {}
    for i, (title, fig) in enumerate(default_figures(results), start=1):
        slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:60]
        out[f"{i:02d}-{slug}.png"] = charts.export_bytes(fig, "png", scale=scale, caption=text)
    return out


_CSS = """
body { font-family: Inter, Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1f2430;
       padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f5f7; } code, pre { font-size: .82rem; } pre { background: #f6f8fa; padding: .6rem;
overflow-x: auto; white-space: pre-wrap; } .figure { page-break-inside: avoid; margin: 1rem 0; }
.figure svg { max-width: 100%; height: auto; } .muted { color: #5f6b7a; font-size: .9rem; }
.summary { background: #f6f8fa; border-left: 4px solid #4C78A8; padding: .6rem 1rem; margin: 1rem 0; }
.verdict { font-size: 1.1rem; } .caption { color: #5f6b7a; font-size: .8rem; margin-top: .2rem; }
.appendix { margin-top: 3rem; border-top: 2px solid #ddd; }
"""


def _table(rows: list[tuple[str, str]]) -> str:
    return (
        "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return html.escape(str(v))


def _run_section(name: str, result: RunResult) -> str:
    s, m = result.settings, result.metrics
    settings = [
        ("model", f"<code>{html.escape(result.spec.model)}</code>"),
        ("modifications", html.escape(result.spec.label())),
        (
            "corpus",
            f"{html.escape(str(s.get('corpus')))} (sha256 <code>{html.escape(str(s.get('corpus_sha256')))}</code>)",
        ),
        ("window / stride", f"{s.get('window')} / {s.get('stride')} tokens"),
        ("token budget", f"{s.get('tokens')} ({int(m.get('evaluated_tokens', 0))} predicted tokens)"),
        ("code version", html.escape(str(s.get("code_version")))),
        ("run key", f"<code>{result.run_key}</code>"),
    ]
    headline = [
        "ppl_base",
        "ppl",
        "ppl_ratio",
        "kl_mean",
        "kl_median",
        "kl_p99",
        "top1_agreement",
        "top5_overlap",
        "dp_rms",
        "bits_per_weight",
        "weight_bytes",
        "achieved_sparsity",
        "coverage",
    ]
    metrics = [(label(k), _fmt(m[k])) for k in headline if k in m]
    spec_json = html.escape(json.dumps(result.spec.to_dict(), indent=2))
    return (
        f"<h3>{html.escape(name)}</h3><h4>Measurement settings</h4>{_table(settings)}"
        f"<h4>Every headline metric</h4>{_table(metrics)}<h4>Spec</h4><pre>{spec_json}</pre>"
    )


def _figure(title: str, fig: go.Figure, static: bool, settings: str = "") -> str:
    """One figure: interactive, or (static) an inline SVG; `settings`: the escaped caption under it."""
    if static:
        body = charts.export_bytes(fig, "svg").decode()
        body = body[body.find("<svg") :]  # drop the XML prolog: the SVG is inlined in HTML
    else:
        body = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
    below = f"<div class='caption'>{settings}</div>" if settings else ""
    return f"<div class='figure'><h3>{html.escape(title)}</h3>{body}{below}</div>"


def _tasks_section(tasks: pd.DataFrame, static: bool) -> str:
    """Benchmark accuracy of each run against the original, its intervals and flips, and the data's sources."""
    from .tasks.tables import sources_text

    def ci(lo, hi):
        return "n/a" if lo is None or hi is None or lo != lo else f"[{lo:.3f}, {hi:.3f}]"

    rows = "".join(
        f"<tr><td>{html.escape(r.label)}</td><td>{html.escape(r.task)}</td><td>{r.metric}</td><td>{r.n_items}</td>"
        f"<td>{r.base:.3f} {ci(r.base_lo, r.base_hi)}</td><td>{r.modified:.3f} {ci(r.modified_lo, r.modified_hi)}</td>"
        f"<td>{r.difference:+.3f} {ci(r.difference_lo, r.difference_hi)}</td><td>{r.right_to_wrong}</td>"
        f"<td>{r.wrong_to_right}</td><td>{_fmt(r.mcnemar_p)}</td></tr>"
        for r in tasks.itertuples()
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("run", "task", "metric", "items", "original", "modified", "difference", "right→wrong",
                  "wrong→right", "McNemar p")
    )  # fmt: skip
    sources = "".join(f"<li>{html.escape(s)}</li>" for s in sources_text(tasks.task))
    return (
        "<h2>Tasks</h2><p class='muted'>Zero-shot, scored as lm-evaluation-harness scores them. 95 % intervals: "
        "Wilson for each accuracy, Newcombe's hybrid score interval for the paired difference (modified − "
        "original); McNemar's exact test on the flips.</p>"
        + _figure("Task accuracy", charts.task_accuracy_chart(tasks), static)
        + f"<table><tr>{head}</tr>{rows}</table><h3>Data sources</h3><ul>{sources}</ul>"
    )


def build_html(
    results: list[RunResult],
    *,
    title: str = "Hemorrhage Lab report",
    figures: list[tuple[str, go.Figure]] | None = None,
    static: bool = False,
    tasks: pd.DataFrame | None = None,
) -> str:
    """A standalone HTML report. Interactive charts (plotly.js inlined once) or, with `static`, inline SVGs
    rendered by kaleido (what the PDF prints). `tasks`: the runs' stored task results (tasks/tables.stored_frame)
    for a Tasks section with each data set's licence and citation. Raises HemlabError for an empty selection."""
    if not results:
        raise HemlabError("choose at least one run for the report")
    figures = default_figures(results) if figures is None else figures
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    version = code_version()
    names = run_names(results)
    text = html.escape(caption(results))
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "" if static else f"<script type='text/javascript'>{get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='muted'>{len(results)} run(s) · generated {now} · every number is relative to the unmodified "
        "model on the same token windows.</p>",
        _summary_html(report_summary.summarise(results, names)),
        "<h2>Charts</h2>",
    ]
    parts += [_figure(title_, fig, static, text) for title_, fig in figures]
    if tasks is not None and not tasks.empty:
        parts.append(_tasks_section(tasks, static))
    parts.append(
        "<div class='appendix'><h2>Appendix: settings, specs and versions</h2><p class='muted'>Perplexity depends "
        "on corpus, window, stride and token budget, listed with each run.</p>"
    )
    for name, result in zip(names, results, strict=True):
        parts.append(_run_section(name, result))
    parts.append("<h3>Code version</h3>" + _table([(k, html.escape(v)) for k, v in version.items()]))
    parts.append("</div></body></html>")
    return "\n".join(parts)


def _ratio(v: float) -> str:
    return "∞" if not math.isfinite(v) else f"×{v:.3g}" if v < 10 else f"×{v:.1f}"


def _summary_html(s: report_summary.Summary) -> str:
    """The summary block: verdict, the changes with their damage, recoveries, thresholds."""
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.families)}</td><td>{_ratio(c.ppl_ratio)}</td>"
        f"<td>{f'{c.kl_mean:.3g}' if math.isfinite(c.kl_mean) else '∞'}</td><td>{c.top1_agreement:.1%}</td>"
        f"<td>{html.escape(c.level)}</td></tr>"
        for c in s.changes
    )
    out = [
        "<div class='summary'><h2>Summary</h2>",
        f"<p class='verdict'>{_bolds(s.verdict)}</p>",
        "<table><tr><th>what was changed</th><th>family</th><th>perplexity ratio</th><th>KL mean (nats)</th>"
        f"<th>top-1 agreement</th><th>level</th></tr>{rows}</table>",
    ]
    if s.recoveries:
        out.append("<h3>Recovered by the remedies</h3><ul>")
        for r in s.recoveries:
            ppl = "n/a" if not math.isfinite(r.ppl_recovered) else f"{r.ppl_recovered:.0%}"
            kl = "n/a" if not math.isfinite(r.kl_recovered) else f"{r.kl_recovered:.0%}"
            out.append(
                f"<li><b>{html.escape(', '.join(r.remedies))}</b> on {html.escape(r.before)}: {ppl} of the "
                f"perplexity damage and {kl} of the KL damage recovered"
                + (" — still beyond repair" if r.beyond_repair else "")
                + "</li>"
            )
        out.append("</ul>")
    if s.thresholds:
        out.append(
            "<h3>Thresholds</h3><ul>" + "".join(f"<li>{_bolds(t)}</li>" for t in s.thresholds) + "</ul>"
        )
    out.append(
        "<p class='muted'>Levels: robust ≤ 1.1× the original's perplexity, noticeable ≤ 2×, serious ≤ 10×, "
        "collapse beyond (the paper's thresholds).</p></div>"
    )
    return "".join(out)


def _bolds(text: str) -> str:
    """Escape `text` and turn its **…** spans into <b>…</b>."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def find_chrome() -> str | None:
    """The Chrome/Chromium executable (HEMLAB_CHROME, else the first of the usual names on PATH)."""
    explicit = os.environ.get("HEMLAB_CHROME")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((p for name in _CHROME_NAMES if (p := shutil.which(name))), None)


def build_pdf(
    results: list[RunResult],
    *,
    title: str = "Hemorrhage Lab report",
    figures: list[tuple[str, go.Figure]] | None = None,
    timeout_s: float = 120.0,
    tasks: pd.DataFrame | None = None,
) -> bytes:
    """The report as PDF: the static HTML printed by headless Chromium. HemlabError when no browser is found
    (install Debian's `chromium`) or printing fails."""
    chrome = find_chrome()
    if chrome is None:
        raise HemlabError("PDF export needs Chromium: install Debian's `chromium` (make test installs it)")
    page = build_html(results, title=title, figures=figures, static=True, tasks=tasks)
    with tempfile.TemporaryDirectory(prefix="hemlab-report-") as tmp:
        src, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        src.write_text(page, encoding="utf-8")
        cmd = [
            chrome,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}/profile",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
            src.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise HemlabError(f"printing the PDF took over {timeout_s:.0f} s and was stopped") from exc
        if not out.is_file() or out.stat().st_size == 0:
            log.error("chromium failed: %s", proc.stderr[-2000:])
            raise HemlabError(
                f"Chromium could not print the report (exit {proc.returncode}); see the app log"
            )
        return out.read_bytes()
