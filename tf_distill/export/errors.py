"""The errors of a refused export: nothing was written when one is raised."""


class ExportError(RuntimeError):
    """A model could not be converted or failed verification.

    Attributes:
        report: The `ExportReport` of the rejected model, or `None` when the
            model failed before it could be measured.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class AccuracyDropError(ExportError):
    """The LiteRT model lost more accuracy than `max_accuracy_drop` allows."""


class UnsupportedOpsError(ExportError):
    """The model uses operations that LiteRT's builtin kernels lack.

    Attributes:
        ops: The TensorFlow op names the converter could not lower.
    """

    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = list(ops)
