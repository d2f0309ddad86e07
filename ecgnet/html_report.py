"""``report.html``: one self-contained page per evaluation (images inline as base64, no network): the
run's config, the metrics with their CIs, the per-class table, ROC / precision-recall / confusion /
reliability plots and a few attribution examples (true and false positives per class)."""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml

from .metrics import summary

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; }
.figs figure { margin: 0; } .figs img { max-width: 560px; border: 1px solid #eee; }
.examples img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; }
"""

# marks the page when every image has decoded (read by the render test through headless Chromium)
CHECK_IMAGES = ("<script>window.addEventListener('load', function () { var ok = Array.prototype.every.call("
                "document.images, function (i) { return i.complete && i.naturalWidth > 0; }); "
                "document.body.setAttribute('data-images', ok ? 'ok' : 'broken'); });</script>")


def _esc(value) -> str:
    return html.escape(str(value))


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _with_ci(value, interval) -> str:
    text = _fmt(value)
    if interval and value is not None and None not in interval:
        text += f" <span class='note'>[{interval[0]:.3f}, {interval[1]:.3f}]</span>"
    return text


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{data}'>"


def metrics_table(results: dict[str, dict]) -> str:
    names = list(results)
    keys = list(dict.fromkeys(k for n in names for k in summary(results[n])))
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    rows = "".join(f"<tr><td>{_esc(k)}</td>" + "".join(
        f"<td>{_with_ci(results[n].get(k), results[n].get('ci', {}).get(k))}</td>" for n in names) + "</tr>"
        for k in keys)
    return f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def per_class_html(metrics: dict, limit: int = 100) -> str:
    cols = [("recall", "Se"), ("precision", "+P"), ("specificity", "Sp"), ("f1", "F1"), ("auroc", "AUROC"),
            ("auprc", "AUPRC"), ("support", "n")]
    rows = []
    for row in metrics["per_class"][:limit]:
        cells = "".join(f"<td>{_with_ci(row.get(k), row.get(f'{k}_ci'))}</td>" for k, _ in cols)
        rows.append(f"<tr><td>{_esc(row['class'])}</td>{cells}</tr>")
    more = len(metrics["per_class"]) - limit
    tail = f"<p class='note'>… {more} more classes in per_class.csv</p>" if more > 0 else ""
    head = "".join(f"<th>{label}</th>" for _, label in cols)
    return f"<table><thead><tr><th>class</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{tail}"


def calibration_html(metrics: dict) -> str:
    cal = metrics.get("calibration")
    if not cal:
        return ""
    rows = [("reported probabilities", cal)]
    if "uncalibrated" in cal:
        rows.append(("uncalibrated", cal["uncalibrated"]))
    body = "".join(f"<tr><td>{label}</td><td>{_fmt(m['ece'])}</td><td>{_fmt(m['brier'])}</td></tr>"
                   for label, m in rows)
    temperature = cal.get("temperature")
    note = ("" if temperature is None else
            f"<p class='note'>temperature(s) fitted on validation: {_esc(', '.join(f'{t:.3g}' for t in temperature[:30]))}"
            f"{' …' if len(temperature) > 30 else ''}</p>")
    return (f"<table><thead><tr><th></th><th>ECE</th><th>Brier</th></tr></thead><tbody>{body}</tbody></table>{note}")


def write_html_report(out_dir: Path, title: str, header_lines: Sequence[str], results: dict[str, dict], main: str,
                      figures_dir: Path, config: dict, info: dict, examples: Optional[list[dict]] = None,
                      extra_text: Optional[str] = None) -> Path:
    """``out_dir/report.html``. ``figures_dir``: where the main model's roc/pr/confusion/reliability PNGs
    are; ``examples``: dicts with class, kind (true/false positive), record, probability, png."""
    figures = []
    for name, caption in (("roc.png", "ROC curves, AUROC [95 % CI] per class"),
                          ("pr.png", "precision-recall curves, AUPRC [95 % CI] per class"),
                          ("confusion.png", "confusion matrices: true (rows) against predicted"),
                          ("reliability.png", "reliability diagram (calibration)")):
        if (figures_dir / name).is_file():
            figures.append(f"<figure>{_image(figures_dir / name, caption)}<figcaption>{_esc(caption)}"
                           "</figcaption></figure>")
    parts = [f"<h1>{_esc(title)}</h1>",
             "".join(f"<p>{_esc(line)}</p>" for line in header_lines if line),
             f"<h2>Metrics</h2>{metrics_table(results)}",
             f"<h2>Per class ({_esc(main)})</h2>{per_class_html(results[main])}"]
    if extra_text:
        parts.append(f"<pre>{_esc(extra_text)}</pre>")
    cal = calibration_html(results[main])
    if cal:
        parts.append(f"<h2>Calibration ({_esc(main)})</h2>{cal}")
    if figures:
        parts.append(f"<h2>Plots ({_esc(main)})</h2><div class='figs'>{''.join(figures)}</div>")
    if examples:
        blocks = [f"<figure>{_image(Path(e['png']), e['record'])}<figcaption>{_esc(e['kind'])} for "
                  f"{_esc(e['class'])}: record {_esc(e['record'])}, p = {e['probability']:.3f} "
                  f"({_esc(e['method'])})</figcaption></figure>" for e in examples]
        parts.append("<h2>Attribution examples</h2><p class='note'>The most confident true and false positive of "
                     "each class in this split; the colour behind each lead shows what raised (red) or lowered "
                     f"(blue) the class's probability.</p><div class='examples'>{''.join(blocks)}</div>")
    parts.append(f"<h2>Run</h2><pre>{_esc(yaml.safe_dump(info, sort_keys=False, default_flow_style=None))}</pre>")
    parts.append(f"<details><summary>config</summary><pre>{_esc(yaml.safe_dump(config, sort_keys=False))}"
                 "</pre></details>")
    parts.append(f"<p class='note'>written {time.strftime('%Y-%m-%d %H:%M:%S')} by ecgnet evaluate</p>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style>{CHECK_IMAGES}</head><body>{''.join(parts)}</body></html>\n")
    path = out_dir / "report.html"
    path.write_text(page)
    return path
