"""The deploy report: ``report.json`` (machine-readable, versioned), ``report.md`` (for a pull request) and
``report.html`` (one self-contained file: plots are base64 PNGs, no network references).

report.json, schema_version 1
-----------------------------
Every value that a stage could not produce in this build is ``null``, and the stage is listed in
``not_available`` with the reason; no number is ever made up.

    schema_version   int, 1. Bumped when a key changes meaning or disappears; new keys may appear without it.
    grukit_version   str
    source           str, where the model came from (path or "torch.nn.Module")
    scheme           "int8" | "16x8"
    model            {layers: int, input_size: int, hidden_size: [int per layer], params: int,
                      macs_per_step: int, output_size: int, per_step: bool}
    task             "classification" | "regression"
    metric           "accuracy" (classification, fraction in [0, 1]) | "mse" (regression)
    higher_is_better bool, true for accuracy
    scores           {runtime -> value of `metric` on the validation data | null}. Runtimes: "float" (NumPy
                     float reference), "source" (the original model in its own framework, when runnable),
                     "onnx" (the exported float ONNX in onnxruntime), "<scheme>" (NumPy integer runtime),
                     and any further runtime a checker adds (e.g. "tflite-micro").
    extra_scores     {metric -> {runtime -> value}}: "mae" for regression; {} for classification
    drop             {runtime -> how much worse than "float" | null}: float - x for accuracy, x - float for mse
    max_drop         float | null, the allowed drop of the integer runtime
    bit_exact        {runtime -> true | false | null}: integer outputs identical to the NumPy integer runtime
    artifacts        {file name -> size in bytes} of the files written next to the report
    targets          [{name, limit, value, unit, pass, estimate, note}]: one entry per check (flash, RAM,
                     latency per board; the metric drop). limit null = reported, not checked; pass null =
                     could not be evaluated in this build (counts as not passing)
    pass             bool, every check passed
    confusion        {runtime -> [[count]] rows true class, columns predicted}, classification only
    drift            [{layer, mean: [T floats], max: [T floats]}]: per step |h_int - h_float| over the
                     validation data (dequantized integer state vs float state); [] when not available
    saturation       [{tensor: "layer<l>/<name>", saturated: int, total: int}]: calibration values outside
                     the quantized range
    stages           [{name, seconds, status: "ok" | "not available in this build" | "failed", detail}]
    not_available    {stage or runtime -> reason}
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
NOT_AVAILABLE = "not available in this build"


@dataclass
class Report:
    """Everything a deploy run found; ``to_json()`` gives the report.json document described above."""

    source: str
    scheme: str
    model: dict
    task: str
    metric: str
    higher_is_better: bool
    scores: dict = field(default_factory=dict)
    extra_scores: dict = field(default_factory=dict)
    max_drop: float | None = None
    bit_exact: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    confusion: dict = field(default_factory=dict)
    class_names: list | None = None
    drift: list = field(default_factory=list)
    saturation: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    not_available: dict = field(default_factory=dict)

    def drop(self) -> dict:
        """{runtime -> drop from float}: positive means worse than the float reference."""
        base = self.scores.get("float")
        out = {}
        for runtime, value in self.scores.items():
            if runtime == "float":
                continue
            if base is None or value is None:
                out[runtime] = None
            else:
                out[runtime] = (base - value) if self.higher_is_better else (value - base)
        return out

    @property
    def passed(self) -> bool:
        """True when every check passed; a check that could not be evaluated is not a pass."""
        return all(t["pass"] is True for t in self.targets)

    def failures(self) -> list[str]:
        """One line per failed or unevaluated check, saying by how much."""
        lines = []
        for t in self.targets:
            if t["pass"] is True:
                continue
            if t["pass"] is None:
                lines.append(f"{t['name']}: could not be checked ({t['note'] or NOT_AVAILABLE})")
            else:
                over = t["value"] - t["limit"]
                lines.append(f"{t['name']}: {_fmt(t['value'], t['unit'])} exceeds the limit "
                             f"{_fmt(t['limit'], t['unit'])} by {_fmt(over, t['unit'])}")
        return lines

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 otherwise (2 is for bad input, raised before a report exists)."""
        return 0 if self.passed else 1

    def to_json(self) -> dict:
        """The report.json document (schema above)."""
        import grukit

        d = asdict(self)
        d.pop("class_names")
        return {
            "schema_version": SCHEMA_VERSION,
            "grukit_version": grukit.__version__,
            **{k: d[k] for k in ("source", "scheme", "model", "task", "metric", "higher_is_better", "scores",
                                 "extra_scores")},
            "drop": self.drop(),
            "max_drop": self.max_drop,
            **{k: d[k] for k in ("bit_exact", "artifacts", "targets")},
            "pass": self.passed,
            **{k: d[k] for k in ("confusion", "drift", "saturation", "stages", "not_available")},
        }


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return NOT_AVAILABLE
    if unit == "bytes":
        return f"{int(value):,} B"
    if unit == "ms":
        return f"{value:.3f} ms"
    if isinstance(value, float):
        return f"{value:.4f}" + (f" {unit}" if unit else "")
    return f"{value}" + (f" {unit}" if unit else "")


def _verdict(p) -> str:
    return "pass" if p is True else ("FAIL" if p is False else "not checked")


# --- tables shared by Markdown and HTML ----------------------------------------------------------------
def _score_rows(r: Report) -> list[list[str]]:
    drop = r.drop()
    rows = []
    for runtime, value in r.scores.items():
        row = [runtime, _fmt(value)]
        row.append("" if runtime == "float" else _fmt(drop[runtime]))
        for name, by_runtime in r.extra_scores.items():
            row.append(_fmt(by_runtime.get(runtime)))
        rows.append(row)
    return rows


def _score_header(r: Report) -> list[str]:
    return ["runtime", r.metric, "drop from float", *r.extra_scores]


def _target_rows(r: Report) -> list[list[str]]:
    return [[t["name"], _fmt(t["value"], t["unit"]), _fmt(t["limit"], t["unit"]) if t["limit"] is not None else "-",
             _verdict(t["pass"]), ("estimate. " if t["estimate"] else "") + t["note"]] for t in r.targets]


TARGET_HEADER = ["check", "value", "limit", "result", "note"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(r: Report) -> str:
    """report.md: the summary a pull request shows."""
    m = r.model
    out = [
        f"# grukit deploy: {'PASS' if r.passed else 'FAIL'}",
        "",
        f"Model `{r.source}`: {m['layers']} GRU layer(s), input {m['input_size']}, hidden {m['hidden_size']}, "
        f"{m['params']:,} parameters, {m['macs_per_step']:,} MACs per step. Scheme **{r.scheme}**, "
        f"task {r.task} ({r.metric}).",
        "",
    ]
    if not r.passed:
        out += ["**Failed checks**", ""] + [f"- {line}" for line in r.failures()] + [""]
    out += ["## Scores on the validation data", "", _md_table(_score_header(r), _score_rows(r)), ""]
    out += ["## Budget (latency, flash and RAM are estimates)", "", _md_table(TARGET_HEADER, _target_rows(r)), ""]
    out += ["## Bit-exactness against the NumPy integer runtime", ""]
    if r.bit_exact:
        out += [_md_table(["runtime", "bit-exact"], [[k, {True: "yes", False: "NO", None: NOT_AVAILABLE}[v]]
                                                     for k, v in r.bit_exact.items()]), ""]
    else:
        out += [f"No runtime to compare: {NOT_AVAILABLE}.", ""]
    if r.artifacts:
        out += ["## Artifacts", "", _md_table(["file", "bytes"], [[k, f"{v:,}"] for k, v in r.artifacts.items()]), ""]
    if r.not_available:
        out += [f"## {NOT_AVAILABLE.capitalize()}", ""] + [f"- {k}: {v}" for k, v in r.not_available.items()] + [""]
    out += ["## Stages", "", _md_table(["stage", "seconds", "status"],
                                       [[s["name"], f"{s['seconds']:.2f}", s["status"]] for s in r.stages]), ""]
    return "\n".join(out)


# --- plots ---------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    # No "Software" text chunk: it holds a URL, and the page must carry no network reference at all.
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_confusion(r: Report) -> str | None:
    if not r.confusion:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(r.confusion), figsize=(4.2 * len(r.confusion), 3.8), squeeze=False)
    for ax, (runtime, matrix) in zip(axes[0], r.confusion.items()):
        cm = np.asarray(matrix)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ticks = range(cm.shape[0])
        labels = r.class_names or [str(t) for t in ticks]
        ax.set_xticks(list(ticks), labels, rotation=45)
        ax.set_yticks(list(ticks), labels)
        ax.set_title(runtime)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    fig.tight_layout()
    return _png(fig)


def _plot_drift(r: Report) -> str | None:
    if not r.drift:
        return None
    plt = _pyplot()
    # Mean and max on separate axes: a single diverging sample would flatten the mean curve.
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for d in r.drift:
        steps = np.arange(len(d["mean"]))
        axes[0].plot(steps, d["mean"], label=f"layer {d['layer']}")
        axes[1].plot(steps, d["max"], label=f"layer {d['layer']}")
    for ax, what in zip(axes, ("mean", "max")):
        ax.set_xlabel("time step")
        ax.set_title(f"{what} |h_int - h_float|")
        ax.legend()
    fig.tight_layout()
    return _png(fig)


def _plot_budget(r: Report) -> str | None:
    rows = [t for t in r.targets if t["limit"] and t["value"] is not None and t["unit"] in ("bytes", "ms")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1))
    used = [100.0 * t["value"] / t["limit"] for t in rows]
    ax.barh([t["name"] for t in rows], used, color=["tab:green" if t["pass"] else "tab:red" for t in rows])
    for i, u in enumerate(used):
        ax.text(u, i, f" {u:.1f}%", va="center")
    ax.axvline(100, color="black", lw=1)
    ax.set_xlabel("% of the limit used")
    ax.invert_yaxis()
    return _png(fig)


# --- HTML ----------------------------------------------------------------------------------------------
def _html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(b64: str | None, alt: str) -> str:
    if b64 is None:
        return f"<p class='na'>{html.escape(alt)}: {NOT_AVAILABLE}.</p>"
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'>"


CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.pass{color:#070}.fail{color:#b00}.na{color:#777;font-style:italic}img{max-width:100%}"""


def to_html(r: Report) -> str:
    """report.html: one self-contained page (inline CSS, plots as data: URIs, no external references)."""
    e = html.escape
    m = r.model
    verdict = f"<span class='{'pass' if r.passed else 'fail'}'>{'PASS' if r.passed else 'FAIL'}</span>"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>grukit deploy report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>grukit deploy: {verdict}</h1>",
        f"<p>Model <code>{e(r.source)}</code>: {m['layers']} GRU layer(s), input {m['input_size']}, hidden "
        f"{e(str(m['hidden_size']))}, {m['params']:,} parameters, {m['macs_per_step']:,} MACs per step. "
        f"Scheme <b>{e(r.scheme)}</b>, task {e(r.task)} ({e(r.metric)}).</p>",
    ]
    if not r.passed:
        parts.append("<ul>" + "".join(f"<li class='fail'>{e(line)}</li>" for line in r.failures()) + "</ul>")
    parts += ["<h2>Scores per runtime</h2>", _html_table(_score_header(r), _score_rows(r))]
    if r.task == "classification":
        parts += ["<h2>Confusion matrices</h2>", _img(_plot_confusion(r), "confusion matrices")]
    parts += ["<h2>Hidden-state drift per step</h2>", _img(_plot_drift(r), "hidden-state drift")]
    parts.append("<h2>Calibration saturation</h2>")
    if r.saturation:
        parts.append(_html_table(["tensor", "saturated", "of", "%"], [
            [s["tensor"], f"{s['saturated']:,}", f"{s['total']:,}",
             f"{100.0 * s['saturated'] / s['total']:.3f}" if s["total"] else "-"] for s in r.saturation]))
    else:
        parts.append(f"<p class='na'>Saturation counts: {NOT_AVAILABLE}.</p>")
    parts.append("<h2>Bit-exactness against the NumPy integer runtime</h2>")
    if r.bit_exact:
        parts.append(_html_table(["runtime", "bit-exact"], [[k, {True: "yes", False: "NO", None: NOT_AVAILABLE}[v]]
                                                             for k, v in r.bit_exact.items()]))
    else:
        parts.append(f"<p class='na'>No runtime to compare: {NOT_AVAILABLE}.</p>")
    parts += ["<h2>Size, latency and memory against the target</h2>",
              "<p>Flash, RAM and latency are estimates; each note says where the figure comes from.</p>",
              _html_table(TARGET_HEADER, _target_rows(r)), _img(_plot_budget(r), "budget use")]
    if r.artifacts:
        parts += ["<h2>Artifacts</h2>", _html_table(["file", "bytes"], [[k, f"{v:,}"] for k, v in r.artifacts.items()])]
    if r.not_available:
        parts += [f"<h2>{e(NOT_AVAILABLE.capitalize())}</h2>",
                  "<ul>" + "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in r.not_available.items()) + "</ul>"]
    parts += ["<h2>Stages</h2>", _html_table(["stage", "seconds", "status", "detail"],
                                             [[s["name"], f"{s['seconds']:.2f}", s["status"], s["detail"]]
                                              for s in r.stages])]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(r: Report, out_dir) -> dict[str, Path]:
    """Write report.json, report.md and report.html into out_dir; returns {kind: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(r.to_json(), indent=2, allow_nan=False) + "\n")
    paths["md"].write_text(to_markdown(r))
    paths["html"].write_text(to_html(r))
    return paths
