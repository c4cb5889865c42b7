"""What an export measured: `ExportReport`, its tables, and writing it to disk."""

import dataclasses
import os

from tf_distill import files as tf_distill_files


@dataclasses.dataclass
class ExportReport:
    """What `export_litert` measured on the converted model.

    Accuracies and top-1 agreement are fractions in [0, 1]; the accuracy drop
    is in percentage points (Keras accuracy minus LiteRT accuracy, times 100),
    so a positive drop means the LiteRT model is worse. Fields that could not
    be measured (no validation data, a model needing TensorFlow ops that this
    interpreter cannot run) are `None`.

    Attributes:
        path: Where the `.tflite` file was written (`None` before writing).
        quantization: One of `QUANTIZATION_MODES`.
        file_size_bytes: Size of the `.tflite` flatbuffer.
        num_examples: Validation examples compared.
        keras_accuracy: Top-1 accuracy of the Keras model.
        litert_accuracy: Top-1 accuracy of the LiteRT model.
        accuracy_drop_points: `100 * (keras_accuracy - litert_accuracy)`.
        top1_agreement: Fraction of examples where both models predict the
            same class.
        max_abs_difference: Largest absolute difference between the Keras and
            the (dequantized) LiteRT outputs.
        latency_ms: Median time of one interpreter call at batch size 1.
        latency_runs: Calls timed for `latency_ms`.
        num_threads: Interpreter threads used for every measurement.
        input_dtype: The LiteRT model's input type (`"int8"` with `int8_io`).
        output_dtype: The LiteRT model's output type.
        tf_ops: TensorFlow ops kept through the `SELECT_TF_OPS` fallback.
        verified: Whether the interpreter ran the model and every check passed.
        max_accuracy_drop: The allowed accuracy drop in points.
        per_channel: For `"dynamic"` and `"int8"`: whether any tensor in the
            file has per-channel scales (read from the file, see
            `export_litert`'s `per_channel`); `None` in the float modes.
        files: The files written beside the `.tflite`: the Markdown and JSON
            reports (see `write`), empty when no report was written.
        sequence_length: For a causal LM (`export_causal_lm`): the fixed
            length `L` of its `[1, L]` signature; `None` otherwise.
        num_tokens: For a causal LM: the next-token predictions the
            perplexities are measured on.
        keras_perplexity: For a causal LM: the Keras model's perplexity on
            the token data.
        litert_perplexity: For a causal LM: the LiteRT model's perplexity on
            the same tokens.
        perplexity_change_percent: `100 * (litert / keras - 1)`: positive
            when the LiteRT model is worse.
        cache_length: For a prefill/decode LM (`export_litertlm`): the rows
            of each KV cache.
        prefill_length: For a prefill/decode LM: the tokens of one prefill
            call.
        greedy_agreement: For a prefill/decode LM: the fraction of greedy
            tokens equal to Keras's `generate` (1.0 in float32).
        greedy_tokens: For a prefill/decode LM: the greedy ids the LiteRT
            model generated after each verification prompt.
        late_latency_ms: For a prefill/decode LM: the median `decode` time
            at the last position of the context (`latency_ms` is at
            position 1).
        runtime_texts: For a `.litertlm`: the greedy text the LiteRT-LM
            runtime generated after each verification prompt.
    """

    path: str | None
    quantization: str
    file_size_bytes: int
    num_examples: int | None = None
    keras_accuracy: float | None = None
    litert_accuracy: float | None = None
    accuracy_drop_points: float | None = None
    top1_agreement: float | None = None
    max_abs_difference: float | None = None
    latency_ms: float | None = None
    latency_runs: int = 0
    num_threads: int = 1
    input_dtype: str | None = None
    output_dtype: str | None = None
    tf_ops: list = dataclasses.field(default_factory=list)
    verified: bool = False
    max_accuracy_drop: float | None = None
    per_channel: bool | None = None
    files: list = dataclasses.field(default_factory=list)
    sequence_length: int | None = None
    num_tokens: int | None = None
    keras_perplexity: float | None = None
    litert_perplexity: float | None = None
    perplexity_change_percent: float | None = None
    cache_length: int | None = None
    prefill_length: int | None = None
    greedy_agreement: float | None = None
    greedy_tokens: list = dataclasses.field(default_factory=list)
    late_latency_ms: float | None = None
    runtime_texts: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        """The report as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    def to_markdown(self):
        """The report as a one-row Markdown table (see `reports_table`).

        Once written, a line after the table lists the `.tflite` file and the
        report files beside it.
        """
        table = reports_table([self])
        written = ([self.path] if self.path else []) + list(self.files)
        if not written:
            return table
        return table + "\nFiles: " + ", ".join(f"`{path}`" for path in written) + "\n"

    def _repr_markdown_(self):
        # Jupyter and IPython show the report as its table.
        return self.to_markdown()

    def commit(self, litert_model, path, report_path=None):
        """Writes the verified model to `path` (atomically), records the
        path, and writes the report to `report_path` if given (see
        `write`). Called only once verification has passed.

        Returns:
            The report itself.
        """
        path = os.fspath(path)
        tf_distill_files.atomic_write(path, litert_model)
        self.path = path
        if report_path is not None:
            self.write(report_path)
        return self

    def write(self, report_path):
        """Writes the report as Markdown and JSON, each atomically.

        Both files are recorded in `files` before writing, so that each lists
        the other.

        Args:
            report_path: The Markdown file; the JSON goes next to it with a
                `.json` extension. If `report_path` ends in `.json`, it
                receives the JSON and the Markdown goes to the same name with
                `.md`.

        Returns:
            `(markdown_path, json_path)`.
        """
        report_path = os.fspath(report_path)
        stem, extension = os.path.splitext(report_path)
        if extension.lower() == ".json":
            markdown_path, json_path = stem + ".md", report_path
        else:
            markdown_path, json_path = report_path, stem + ".json"
        self.files = [markdown_path, json_path]
        tf_distill_files.atomic_write(markdown_path, self.to_markdown())
        tf_distill_files.atomic_write_json(json_path, self.to_dict())
        return markdown_path, json_path


_TABLE_COLUMNS = (
    ("Quantization", lambda r: f"`{r.quantization}`" + _per_tensor_mark(r)),
    ("Size (bytes)", lambda r: f"{r.file_size_bytes:,}"),
    ("Keras acc. (%)", lambda r: _percent(r.keras_accuracy)),
    ("LiteRT acc. (%)", lambda r: _percent(r.litert_accuracy)),
    ("Drop (points)", lambda r: _number(r.accuracy_drop_points, "{:+.2f}")),
    ("Top-1 agreement (%)", lambda r: _percent(r.top1_agreement)),
    ("Max abs diff", lambda r: _number(r.max_abs_difference, "{:.2e}")),
    ("Latency (ms, batch 1)", lambda r: _number(r.latency_ms, "{:.4f}")),
    ("I/O", lambda r: f"{r.input_dtype}/{r.output_dtype}"),
    ("Verified", lambda r: "yes" if r.verified else "no"),
)


# A language model's table: perplexities instead of accuracies.
_LANGUAGE_TABLE_COLUMNS = (
    _TABLE_COLUMNS[:2]
    + (
        ("Length", lambda r: _number(r.sequence_length, "{}")),
        ("Keras ppl.", lambda r: _number(r.keras_perplexity, "{:.4f}")),
        ("LiteRT ppl.", lambda r: _number(r.litert_perplexity, "{:.4f}")),
        ("Ppl. change (%)", lambda r: _number(r.perplexity_change_percent, "{:+.3f}")),
        ("Top-1 agreement (%)", lambda r: _percent(r.top1_agreement)),
        ("Greedy agreement (%)", lambda r: _percent(r.greedy_agreement)),
    )
    + _TABLE_COLUMNS[6:]
)


def _per_tensor_mark(report):
    return " per-tensor" if report.per_channel is False else ""


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _number(value, template):
    return "n/a" if value is None else template.format(value)


def reports_table(reports):
    """A Markdown table comparing export reports, one row per report.

    Args:
        reports: A list of `ExportReport` (for example one per quantization
            mode of the same student). Reports of a causal LM (with
            perplexities) get perplexity columns instead of accuracies.

    Returns:
        The table as a string ending in a newline.
    """
    language = any(report.keras_perplexity is not None for report in reports)
    columns = _LANGUAGE_TABLE_COLUMNS if language else _TABLE_COLUMNS
    header = "| " + " | ".join(name for name, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    rows = ["| " + " | ".join(cell(report) for _, cell in columns) + " |" for report in reports]
    return "\n".join([header, rule, *rows]) + "\n"
