"""`Distiller.summary()`: which models train, which are frozen, what is tapped.

Keras's own summary lists a model's sublayers; for a Distiller that shows the
teachers, the student and the student's tap model (which shares the
student's layers) side by side, as if the tap model were another network.
This table gives each model its role instead.
"""

import numpy as np

from tf_distill import teachers as teachers_lib
from tf_distill.schedules import Schedule


def _parameters(layer):
    if not getattr(layer, "built", False) and not layer.weights:
        return None
    return sum(int(np.prod(weight.shape)) for weight in layer.weights)


def _count(value):
    return "unbuilt" if value is None else f"{value:,}"


def summary_lines(distiller):
    """The lines `Distiller.summary` prints.

    One row per teacher (frozen: never trained by `fit`), the student and
    each adapter (trained), with their parameter counts and the layers each
    distillation loss taps; then the totals and the losses with their
    weights.
    """
    names = list(distiller.teachers)
    losses = distiller.distillation_losses
    tapped = {name: [] for name in names}
    for loss, teacher_name in zip(losses, distiller.loss_teachers):
        if loss.teacher_layer_name:
            tapped[teacher_name or names[0]].append(loss.teacher_layer_name)
    student_taps = [loss.student_layer_name for loss in losses if loss.student_layer_name]
    rows = [
        ("teacher", model.name, _parameters(model), "no (frozen)", tapped[name])
        for name, model in teachers_lib.members(distiller.teacher)
    ]
    rows.append(
        ("student", distiller.student.name, _parameters(distiller.student), "yes", student_taps)
    )
    for index, adapter in enumerate(getattr(distiller, "adapters", None) or []):
        if adapter is not None:
            rows.append((f"adapter (loss {index})", adapter.name, _parameters(adapter), "yes", []))
    header = ("Role", "Model", "Params", "Trainable", "Tapped layers")
    table = [header] + [
        (role, name, _count(count), trainable, ", ".join(dict.fromkeys(layers)) or "-")
        for role, name, count, trainable, layers in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines = [f'Distiller "{distiller.name}"', rule]
    for position, row in enumerate(table):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if position == 0:
            lines.append(rule)
    lines.append(rule)
    frozen = sum(count or 0 for role, _, count, _, _ in rows if role == "teacher")
    trained = sum(count or 0 for role, _, count, _, _ in rows if role != "teacher")
    lines.append(f"Trainable params (student and adapters): {trained:,}")
    lines.append(f"Frozen params (teachers): {frozen:,}")
    weights = distiller.distillation_loss_weights
    terms = ", ".join(
        f"{weight:g}·{type(loss).__name__}"
        + (f"[{teacher}]" if teacher else "")
        + (
            f"({loss.teacher_layer_name} -> {loss.student_layer_name})"
            if loss.teacher_layer_name
            else ""
        )
        for loss, weight, teacher in zip(losses, weights, distiller.loss_teachers)
    )
    alpha = distiller.student_loss_weight
    rest = f"(1 − {alpha!r})" if isinstance(alpha, Schedule) else f"{1 - alpha:g}"
    lines.append(f"Loss: {alpha:g}·student_loss + {rest}·({terms or 'none'})")
    return lines


def print_summary(
    distiller,
    line_length=None,
    positions=None,
    print_fn=None,
    expand_nested=False,
    show_trainable=False,
    layer_range=None,
):
    """`Distiller.summary`: prints `summary_lines`, then, with
    `expand_nested`, each model's own Keras summary."""
    print_fn = print_fn or print
    for line in summary_lines(distiller):
        print_fn(line)
    if expand_nested:
        models = [model for _, model in teachers_lib.members(distiller.teacher)]
        for model in [*models, distiller.student]:
            model.summary(
                line_length=line_length,
                positions=positions,
                print_fn=print_fn,
                show_trainable=show_trainable,
                layer_range=layer_range,
            )
