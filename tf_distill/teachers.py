"""Temporary (replaced at merge)."""

TEACHER_OUTPUT_KINDS = ("logits", "probabilities")
ENSEMBLE_KINDS = ("average_probabilities", "average_logits")
