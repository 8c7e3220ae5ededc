"""The deploy report: ``report.json`` (machine-readable, versioned), ``report.md`` (for a pull request) and
``report.html`` (one self-contained file: plots are base64 PNGs, no network references).

report.json, schema_version 2
-----------------------------
A value a run could not produce is ``null`` and the reason is in ``not_available``; no number is made up.
The only gaps are environmental (a framework not importable, no host C compiler, no ARM toolchain / QEMU)
or follow from the model (a bidirectional GRU has no integer, TFLite or C form).

    schema_version   int, 2. Bumped when a key changes meaning or disappears; new keys may appear without it.
    grukit_version   str
    source           str, where the model came from (path or "torch.nn.Module")
    scheme           "int8" | "16x8"
    model            {layers: int, input_size: int, hidden_size: [int per layer], params: int,
                      macs_per_step: int, output_size: int, per_step: bool, bidirectional: bool, head: null |
                      {reads: "last_step" | "final_state" | "every_step", layers: [{in, out, activation}]}}
    task             "classification" | "regression"
    metric           "accuracy" (classification, fraction in [0, 1]) | "mse" (regression)
    higher_is_better bool, true for accuracy
    baseline         "numpy-float": the runtime every drop is measured from; "numpy-float-unpruned" (the
                     float model before pruning) when the run pruned
    scores           {runtime -> value of `metric` on the validation sequences it saw}. Runtimes:
                     "framework" (the source model in its own framework), "onnxruntime" (the exported float
                     ONNX), "numpy-float", "numpy-<scheme>" (NumPy integer), "litert", "onnxruntime-qdq"
                     (the QDQ step model, default session options), "tflite-micro", "c-kernel"
                     (firmware_ref's C, host build); with pruning also "numpy-float-unpruned" (the original
                     float model; "numpy-float" is then the pruned float model)
    extra_scores     {metric -> {runtime -> value}}: "mae" for regression; {} for classification
    runtimes         {runtime -> {what: str, sequences: int seen, of: int in the validation set, note: str,
                      baseline: numpy-float's metric on the same sequences (only when sequences < of)}}
    drop             {runtime -> how much worse than the baseline on the same sequences}: baseline - x for
                     accuracy, x - baseline for mse
    max_drop         float, the allowed drop of the NumPy integer runtime (absolute, in the metric's unit)
    observer         {name: "auto" | "minmax" | "percentile" | "mse", chosen: {tensor -> observer}}: how activation
                     ranges were chosen; chosen lists the tensors the auto observer did not leave at min/max
    input_range      null, or {lo: [per channel], hi: [per channel]}: the input range declared with
                     --input-range, which the input's quantization covers instead of the calibration data's
    max_drop_relative  float | null: when the limit was given as a share of the baseline's MSE (the default for
                     regression, 0.25), that share
    bit_exact        {runtime -> true | false | null}: "tflite-micro" and "c-kernel" give exactly the NumPy
                     integer runtime's integers (output, and every layer's state at every step)
    bit_exact_detail {runtime -> what was compared, or the first mismatch: tensor, position, got, expected}
    artifacts        {file name (relative to the report) -> size in bytes}
    latency          {board -> {measured: bool, instructions_per_step: float, source: str}}
    targets          [{name, limit, value, unit, pass, estimate, note}]: per board flash, RAM, latency per step
                     and per sequence; then "tflite-micro bit-exact" and "c-kernel bit-exact" (unit
                     "mismatching elements", limit 0, value how many integers differ from the NumPy integer
                     runtime, or 1 when a tensor has the wrong shape; the note names what was compared or the
                     first mismatch); then the metric drop. A line with a limit is a check: pass true / false,
                     or null = could not be evaluated (value null, the note says why; counts as not
                     passing). A line with limit null (latency per step; latency per sequence without
                     --max-latency-ms) is reported only: pass null, and it does not count. estimate true =
                     the value is an estimate, the note says from what
    pass             bool, every check (every line with a limit) passed
    confusion        {runtime -> [[count]] rows true class, columns predicted}, classification only
    drift            [{layer, mean: [T floats], max: [T floats]}]: per step |h_int - h_float| over the
                     validation data (dequantized integer state vs float state)
    saturation       [{tensor: "layer<l>/<name>", saturated: int, total: int, observed: [lo, hi],
                      quantized: [lo, hi]}]: calibration values outside the quantized range
    val_saturation   {tensor -> {saturated, harmful, of: int, observed: [min, max], range: [lo, hi]}}: every tensor of
                     the integer graph (the input first) on the validation data against its quantized range;
                     harmful excludes values beyond a bound set where the activation the tensor feeds is constant
    tensor_error     {sequences: int, tensors: {tensor -> {rmse, rmse_lsb, max_abs, relative, per_step_lsb: [T]}}}:
                     every tensor of the integer graph, dequantized, against the float value of the same tensor
                     in the same run (rmse in its units and in LSB, max |error|, rmse relative to the width of
                     its quantized range, rmse in LSB per step); grukit.diagnose
    sensitivity      {sequences, float, integer, simulated: metrics, groups: [{group, metric, recovered,
                     output_error_recovered, advice}] most recovering first, note}: with one tensor group at a
                     time left in float in a fake-quantized run, the share of the loss that comes back, and
                     what to do; groups [] (and the note says why) when the integer model loses nothing
    warnings         [str], most severe first: each tensor the validation data drives out of its quantized range
                     beyond what calibration saw, with the likely fix
    quantization_notes  [str]: parameters quantization had to adjust, in words (e.g. a weight scale widened so
                     a large bias fits its accumulator); [] when nothing was adjusted
    optimize         "speed" | "size": the form of the generated C constants (grukit deploy --optimize)
    forms            {deployed: form, note: str, boards: {board -> {form -> {flash_bytes, flash_estimate,
                     instructions_per_step, measured}}}}: both forms of the C constants on each board, so the
                     trade is visible (empty boards when there is no C, or the other form is refused; note says
                     why)
    prune            null without pruning, else {method: str (criterion, scope, refit; how an automatic ratio
                     was found), ratio: float, layers: [{hidden_before, hidden_after}], params_before,
                     params_after, macs_before, macs_after: int, search: null | {max_drop, task, sequences,
                     trials: [[ratio, loss]]} (the loss against the original float model on the calibration
                     data), boards: {board -> {flash_before, flash_after: bytes, instructions_before,
                     instructions_after: per step, latency_ms_before, latency_ms_after: per validation
                     sequence, measured: bool (both instruction counts from QEMU)}}}. `model` describes the
                     pruned model
    stages           [{name, seconds, status: "ok" | "skipped" | "failed", detail}]
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

from grukit.core.version import __version__

SCHEMA_VERSION = 2
NOT_AVAILABLE = "not available"
MISMATCH_UNIT = "mismatching elements"  # the unit of the bit-exactness checks


@dataclass
class Report:
    """Everything a deploy run found; ``to_json()`` gives the report.json document described above."""

    source: str
    scheme: str
    model: dict
    task: str
    metric: str
    higher_is_better: bool
    baseline: str = "numpy-float"
    scores: dict = field(default_factory=dict)
    runtimes: dict = field(default_factory=dict)
    extra_scores: dict = field(default_factory=dict)
    max_drop: float | None = None
    max_drop_relative: float | None = None
    input_range: dict | None = None
    observer: dict | None = None
    bit_exact: dict = field(default_factory=dict)
    bit_exact_detail: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    confusion: dict = field(default_factory=dict)
    class_names: list | None = None
    drift: list = field(default_factory=list)
    saturation: list = field(default_factory=list)
    quantization_notes: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    not_available: dict = field(default_factory=dict)
    prune: dict | None = None
    optimize: str = "speed"
    forms: dict = field(default_factory=dict)
    val_saturation: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    tensor_error: dict = field(default_factory=dict)
    sensitivity: dict = field(default_factory=dict)

    def drop(self) -> dict:
        """{runtime -> drop from the baseline on the same sequences}: positive means worse than float."""
        out = {}
        for runtime, value in self.scores.items():
            if runtime == self.baseline:
                continue
            base = self.runtimes.get(runtime, {}).get("baseline", self.scores.get(self.baseline))
            if base is None or value is None:
                out[runtime] = None
            else:
                out[runtime] = (base - value) if self.higher_is_better else (value - base)
        return out

    def checks(self) -> list[dict]:
        """The targets lines that are checks (have a limit); the others are reported only."""
        return [t for t in self.targets if t["limit"] is not None]

    @property
    def passed(self) -> bool:
        """True when every check passed; a check that could not be evaluated is not a pass. Lines without a
        limit are reported, not checked, and do not count."""
        return all(t["pass"] is True for t in self.checks())

    def failures(self) -> list[str]:
        """One line per failed or unevaluated check, saying by how much (or, for a bit-exactness check,
        where the first mismatch is)."""
        lines = []
        for t in self.checks():
            if t["pass"] is True:
                continue
            if t["pass"] is None:
                lines.append(f"{t['name']}: could not be checked ({t['note'] or NOT_AVAILABLE})")
            elif t["unit"] == MISMATCH_UNIT:
                lines.append(f"{t['name']}: {format_value(t['value'], t['unit'])} (limit {t['limit']}); {t['note']}")
            else:
                over = t["value"] - t["limit"]
                lines.append(f"{t['name']}: {format_value(t['value'], t['unit'])} exceeds the limit "
                             f"{format_value(t['limit'], t['unit'])} by {format_value(over, t['unit'])}")
        return lines

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 otherwise (2 is for bad input, raised before a report exists)."""
        return 0 if self.passed else 1

    def to_json(self) -> dict:
        """The report.json document (schema above)."""
        d = asdict(self)
        d.pop("class_names")
        return {
            "schema_version": SCHEMA_VERSION,
            "grukit_version": __version__,
            **{k: d[k] for k in ("source", "scheme", "model", "task", "metric", "higher_is_better", "baseline",
                                 "scores", "extra_scores", "runtimes")},
            "drop": self.drop(),
            "max_drop": self.max_drop,
            "max_drop_relative": self.max_drop_relative,
            "input_range": self.input_range,
            "observer": self.observer,
            **{k: d[k] for k in ("bit_exact", "bit_exact_detail", "artifacts", "latency", "targets")},
            "optimize": self.optimize,
            "forms": self.forms,
            "pass": self.passed,
            **{k: d[k] for k in ("confusion", "drift", "saturation", "val_saturation", "warnings", "tensor_error",
                                 "sensitivity", "quantization_notes", "prune", "stages", "not_available")},
        }


def format_value(value, unit: str = "") -> str:
    """A report value with its unit, as every report format (and the CLI summary) shows it."""
    if value is None:
        return NOT_AVAILABLE
    if unit == "bytes":
        return f"{int(value):,} B"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == MISMATCH_UNIT:
        return f"{value:,} mismatching element" + ("" if value == 1 else "s")
    if isinstance(value, float):
        return f"{value:.4f}" + (f" {unit}" if unit else "")
    return f"{value}" + (f" {unit}" if unit else "")


def verdict(p) -> str:
    """pass / FAIL / not checked for a check's pass value."""
    return "pass" if p is True else ("FAIL" if p is False else "not checked")


# --- tables shared by Markdown and HTML ----------------------------------------------------------------
def _score_rows(r: Report) -> list[list[str]]:
    drop = r.drop()
    rows = []
    for runtime, value in r.scores.items():
        info = r.runtimes.get(runtime, {})
        seen = f"{info['sequences']} of {info['of']}" if info else ""
        row = [runtime, seen, format_value(value), "" if runtime == r.baseline else format_value(drop[runtime])]
        row += [format_value(by_runtime.get(runtime)) for by_runtime in r.extra_scores.values()]
        row.append("; ".join(x for x in (info.get("what", ""), info.get("note", "")) if x))
        rows.append(row)
    return rows


def _score_header(r: Report) -> list[str]:
    return ["runtime", "sequences", r.metric, f"drop from {r.baseline}", *r.extra_scores, "what ran"]


def _bit_exact_rows(r: Report) -> list[list[str]]:
    return [[k, {True: "yes", False: "NO", None: NOT_AVAILABLE}[v], r.bit_exact_detail.get(k) or r.not_available.get(k, "")]
            for k, v in r.bit_exact.items()]


BIT_EXACT_HEADER = ["runtime", "bit-exact", "compared / first mismatch"]


def _summary(r: Report) -> str:
    m = r.model
    text = (f"{m['layers']} GRU layer(s), input {m['input_size']}, hidden {m['hidden_size']}, {m['params']:,} "
            f"parameters, {m['macs_per_step']:,} MACs per step. Scheme {r.scheme}, task {r.task} ({r.metric}).")
    if r.observer:
        chosen = ", ".join(f"{t}: {k}" for t, k in r.observer["chosen"].items())
        text += f" Ranges: {r.observer['name']} observer" + (
            f" (min/max except {chosen})" if chosen else (" (min/max everywhere)" if r.observer["name"] == "auto"
                                                          else "")) + "."
    return text


def _prune_rows(r: Report) -> list[list[str]]:
    """Before / after rows of the pruning section."""
    p = r.prune
    rows = [[f"layer {i} hidden units", str(layer["hidden_before"]), str(layer["hidden_after"])]
            for i, layer in enumerate(p["layers"])]
    rows += [["parameters", f"{p['params_before']:,}", f"{p['params_after']:,}"],
             ["MACs per step", f"{p['macs_before']:,}", f"{p['macs_after']:,}"]]
    for board, b in p["boards"].items():
        how = "measured" if b["measured"] else "cost model"
        rows += [[f"{board} flash", format_value(b["flash_before"], "bytes"), format_value(b["flash_after"], "bytes")],
                 [f"{board} instructions per step ({how})", f"{b['instructions_before']:,.0f}",
                  f"{b['instructions_after']:,.0f}"],
                 [f"{board} latency per sequence (estimate)", format_value(b["latency_ms_before"], "ms"),
                  format_value(b["latency_ms_after"], "ms")]]
    unpruned, pruned = r.scores.get("numpy-float-unpruned"), r.scores.get("numpy-float")
    integer = r.scores.get(f"numpy-{r.scheme}")
    rows.append([f"{r.metric} (float before, float after)", format_value(unpruned), format_value(pruned)])
    rows.append([f"{r.metric} of the pruned numpy-{r.scheme} model", "", format_value(integer)])
    return rows


PRUNE_HEADER = ["", "before pruning", "after"]


def _prune_lines(r: Report) -> list[str]:
    p = r.prune
    lines = [f"{p['method']}; ratio {p['ratio']:.3g}."]
    drop = r.drop().get(f"numpy-{r.scheme}")
    if drop is not None:
        lines.append(f"The pruned {r.scheme} model's {r.metric} drop is measured against the original float model "
                     f"(numpy-float-unpruned): {format_value(drop)}.")
    return lines


def _target_rows(r: Report) -> list[list[str]]:
    return [[t["name"], format_value(t["value"], t["unit"]), format_value(t["limit"], t["unit"]) if t["limit"] is not None else "-",
             "reported" if t["limit"] is None else verdict(t["pass"]),
             ("estimate: " if t["estimate"] else "") + t["note"]] for t in r.targets]


TARGET_HEADER = ["check", "value", "limit", "result", "note"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


FORMS_HEADER = ["board", "C constants (--optimize)", "flash (bytes)", "instructions per step"]


def _forms_rows(r: Report) -> list[list[str]]:
    """Both forms of the C constants on each board, the deployed one marked."""
    rows = []
    for board, forms in r.forms.get("boards", {}).items():
        for form, f in forms.items():
            flash = ("estimate: " if f["flash_estimate"] else "") + format_value(f["flash_bytes"], "bytes")
            count = f"{f['instructions_per_step']:,.0f}" + ("" if f["measured"] else " (cost model)")
            rows.append([board, form + (" (deployed)" if form == r.forms["deployed"] else ""), flash, count])
    return rows


def _forms_line(r: Report) -> str:
    if not r.forms:
        return ""
    if not r.forms.get("boards"):
        return f"C constants: {r.forms['deployed']} form ({r.forms['note']})."
    return ("C constants: the deployed form and the other, built and measured the same way (--optimize speed: "
            "packed weights and tables; size: a byte per weight, ADD / SUB computed). Both give the same integers.")


def _latency_lines(r: Report) -> list[str]:
    return [f"{board}: {'measured' if v['measured'] else 'NOT measured'} instruction count, "
            f"{v['instructions_per_step']:,.0f} per step, from {v['source']}. Milliseconds are estimates "
            "(instructions x the board's estimated cycles per instruction / clock)." for board, v in r.latency.items()]


def _saturation_rows(r: Report) -> list[list[str]]:
    return [[s["tensor"], f"{s['saturated']:,}", f"{s['total']:,}",
             f"{100.0 * s['saturated'] / s['total']:.3f}" if s["total"] else "-",
             "[{:.4g}, {:.4g}]".format(*s["observed"]) if "observed" in s else "",
             "[{:.4g}, {:.4g}]".format(*s["quantized"]) if "quantized" in s else ""] for s in r.saturation]


SATURATION_HEADER = ["tensor", "saturated", "of", "%", "observed range", "quantized range"]


def _val_saturation_rows(r: Report) -> list[list[str]]:
    return [[tensor, f"{v['saturated']:,}", f"{v['harmful']:,}", f"{v['of']:,}",
             "[{:.4g}, {:.4g}]".format(*v["observed"]), "[{:.4g}, {:.4g}]".format(*v["range"])]
            for tensor, v in r.val_saturation.items() if v["saturated"]]


def _tensor_error_rows(r: Report) -> list[list[str]]:
    return [[tensor, f"{e['rmse']:.4g}", f"{e['rmse_lsb']:.2f}", f"{e['max_abs']:.4g}", f"{100 * e['relative']:.3f}"]
            for tensor, e in r.tensor_error.get("tensors", {}).items()]


TENSOR_ERROR_HEADER = ["tensor", "rmse", "rmse (LSB)", "max |error|", "rmse, % of its range"]
SENSITIVITY_SHOWN = 5  # groups the report lists, most recovering first


def _sensitivity_rows(r: Report) -> list[list[str]]:
    return [[g["group"], format_value(g["metric"]), f"{100 * g['recovered']:.0f}%",
             f"{100 * g['output_error_recovered']:.0f}%", g["advice"]]
            for g in r.sensitivity.get("groups", [])[:SENSITIVITY_SHOWN]]


SENSITIVITY_HEADER = ["kept in float", "metric", "of the loss recovered", "of the output error recovered", "what to do"]


def _sensitivity_lines(r: Report) -> list[str]:
    s = r.sensitivity
    if not s:
        return []
    if not s["groups"]:
        return [s["note"]]
    return [f"On {s['sequences']} validation sequences: float {format_value(s['float'])}, the integer runtime "
            f"{format_value(s['integer'])}, the fake-quantized stand-in {format_value(s['simulated'])} (its "
            "sigmoid and tanh are exact: close to the integer model, not equal). Each row leaves one group of "
            "tensors in float in the stand-in."]


VAL_SATURATION_HEADER = ["tensor", "outside the range", "of them changing the result", "values", "validation range",
                         "quantized range"]


def to_markdown(r: Report) -> str:
    """report.md: the summary a pull request shows."""
    out = [f"# grukit deploy: {'PASS' if r.passed else 'FAIL'}", "", f"Model `{r.source}`: {_summary(r)}", ""]
    if not r.passed:
        out += ["**Failed checks**", ""] + [f"- {line}" for line in r.failures()] + [""]
    if r.warnings:
        out += ["**Warnings**", ""] + [f"- {line}" for line in r.warnings] + [""]
    out += ["## Scores on the validation data", "", _md_table(_score_header(r), _score_rows(r)), ""]
    if r.prune:
        out += ["## Pruning", ""] + [f"- {line}" for line in _prune_lines(r)] + [""]
        out += [_md_table(PRUNE_HEADER, _prune_rows(r)), ""]
    out += ["## Size, latency and memory against the target", "", _md_table(TARGET_HEADER, _target_rows(r)), ""]
    out += [f"- {line}" for line in _latency_lines(r)] + [""]
    forms = _forms_rows(r)
    if r.forms:
        out += [_forms_line(r), ""] + ([_md_table(FORMS_HEADER, forms), ""] if forms else [])
    out += ["## Bit-exactness against the NumPy integer runtime", ""]
    out += [_md_table(BIT_EXACT_HEADER, _bit_exact_rows(r)) if r.bit_exact else f"Nothing compared: {NOT_AVAILABLE}.", ""]
    for runtime, matrix in r.confusion.items():
        labels = r.class_names or [str(i) for i in range(len(matrix))]
        out += [f"## Confusion matrix, {runtime} (rows true, columns predicted)", "",
                _md_table(["", *labels], [[labels[i], *map(str, row)] for i, row in enumerate(matrix)]), ""]
    if r.drift:
        out += ["## Hidden-state drift |h_int - h_float|", "", _md_table(
            ["layer", "mean over steps", "mean at last step", "max over steps"],
            [[str(d["layer"]), f"{np.mean(d['mean']):.4g}", f"{d['mean'][-1]:.4g}", f"{max(d['max']):.4g}"]
             for d in r.drift]), ""]
    if r.saturation:
        out += ["## Calibration saturation", "", _md_table(SATURATION_HEADER, _saturation_rows(r)), ""]
    if r.val_saturation:
        out += ["## Validation data against the quantized ranges", "",
                _md_table(VAL_SATURATION_HEADER, _val_saturation_rows(r)), ""]
    if r.sensitivity:
        out += ["## What costs the metric", ""] + _sensitivity_lines(r) + [""]
        if r.sensitivity["groups"]:
            out += [_md_table(SENSITIVITY_HEADER, _sensitivity_rows(r)), ""]
    if r.tensor_error:
        out += [f"## Per-tensor quantization error ({r.tensor_error['sequences']} validation sequences)", "",
                _md_table(TENSOR_ERROR_HEADER, _tensor_error_rows(r)), ""]
    if r.quantization_notes:
        out += ["## Quantization adjustments", ""] + [f"- {note}" for note in r.quantization_notes] + [""]
    if r.artifacts:
        out += ["## Artifacts", "", _md_table(["file", "bytes"], [[k, f"{v:,}"] for k, v in r.artifacts.items()]), ""]
    if r.not_available:
        out += ["## Not run here", ""] + [f"- {k}: {v}" for k, v in r.not_available.items()] + [""]
    out += ["## Stages", "", _md_table(["stage", "seconds", "status", "detail"],
                                       [[s["name"], f"{s['seconds']:.2f}", s["status"], s["detail"]] for s in r.stages]), ""]
    return "\n".join(out)


# --- plots ---------------------------------------------------------------------------------------------
def _pyplot():
    # matplotlib loads on the first plot, after choosing its file-only backend: never a window, no display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg") (see above)

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


def _plot_tensor_error(r: Report) -> str | None:
    """Per layer, each tensor's rmse in LSB over the steps (the head's as points at the last step)."""
    tensors = r.tensor_error.get("tensors", {})
    layers = sorted({name.split("/")[0] for name in tensors if "/" in name})
    if not layers:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(layers), figsize=(4.6 * len(layers), 3.4), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for name, e in tensors.items():
            if name.startswith(layer + "/"):
                ax.plot(e["per_step_lsb"], label=name.split("/")[1], lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("time step")
        ax.set_title(f"{layer}: rmse in LSB")
    axes[0][-1].legend(fontsize=6, ncol=2)
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
th{background:#f3f3f3}.pass{color:#070}.fail{color:#b00}.warn{color:#a60}.na{color:#777;font-style:italic}img{max-width:100%}"""


def to_html(r: Report) -> str:
    """report.html: one self-contained page (inline CSS, plots as data: URIs, no external references)."""
    e = html.escape
    verdict = f"<span class='{'pass' if r.passed else 'fail'}'>{'PASS' if r.passed else 'FAIL'}</span>"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>grukit deploy report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>grukit deploy: {verdict}</h1>",
        f"<p>Model <code>{e(r.source)}</code>: {e(_summary(r))}</p>",
    ]
    if not r.passed:
        parts.append("<ul>" + "".join(f"<li class='fail'>{e(line)}</li>" for line in r.failures()) + "</ul>")
    if r.warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{e(line)}</li>" for line in r.warnings)
                     + "</ul>")
    parts += ["<h2>Size, latency and memory against the target</h2>", _html_table(TARGET_HEADER, _target_rows(r)),
              "<ul>" + "".join(f"<li>{e(line)}</li>" for line in _latency_lines(r)) + "</ul>",
              _img(_plot_budget(r), "budget use")]
    forms = _forms_rows(r)
    if r.forms:
        parts.append(f"<p>{e(_forms_line(r))}</p>")
        if forms:
            parts.append(_html_table(FORMS_HEADER, forms))
    parts += ["<h2>Scores per runtime</h2>", _html_table(_score_header(r), _score_rows(r))]
    if r.prune:
        parts += ["<h2>Pruning</h2>", "<ul>" + "".join(f"<li>{e(line)}</li>" for line in _prune_lines(r)) + "</ul>",
                  _html_table(PRUNE_HEADER, _prune_rows(r))]
    if r.task == "classification":
        parts += ["<h2>Confusion matrices</h2>", _img(_plot_confusion(r), "confusion matrices")]
    parts.append("<h2>Bit-exactness against the NumPy integer runtime</h2>")
    parts.append(_html_table(BIT_EXACT_HEADER, _bit_exact_rows(r)) if r.bit_exact
                 else f"<p class='na'>Nothing compared: {NOT_AVAILABLE}.</p>")
    parts += ["<h2>Hidden-state drift per step</h2>", _img(_plot_drift(r), "hidden-state drift")]
    parts.append("<h2>Calibration saturation</h2>")
    parts.append(_html_table(SATURATION_HEADER, _saturation_rows(r)) if r.saturation
                 else f"<p class='na'>Saturation counts: {NOT_AVAILABLE}.</p>")
    if r.val_saturation:
        rows = _val_saturation_rows(r)
        parts.append("<h2>Validation data against the quantized ranges</h2>")
        parts.append(_html_table(VAL_SATURATION_HEADER, rows) if rows
                     else "<p>Every validation value lies inside its tensor's quantized range.</p>")
    if r.sensitivity:
        parts += ["<h2>What costs the metric</h2>"] + [f"<p>{e(line)}</p>" for line in _sensitivity_lines(r)]
        if r.sensitivity["groups"]:
            parts.append(_html_table(SENSITIVITY_HEADER, _sensitivity_rows(r)))
    if r.tensor_error:
        parts += [f"<h2>Per-tensor quantization error ({r.tensor_error['sequences']} validation sequences)</h2>",
                  _img(_plot_tensor_error(r), "per-tensor error per step"),
                  _html_table(TENSOR_ERROR_HEADER, _tensor_error_rows(r))]
    if r.quantization_notes:
        parts.append("<h2>Quantization adjustments</h2><ul>"
                     + "".join(f"<li>{html.escape(n)}</li>" for n in r.quantization_notes) + "</ul>")
    if r.artifacts:
        parts += ["<h2>Artifacts</h2>", _html_table(["file", "bytes"], [[k, f"{v:,}"] for k, v in r.artifacts.items()])]
    if r.not_available:
        parts += ["<h2>Not run here</h2>",
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
