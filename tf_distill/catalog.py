"""What the `tf-distill` command shows before TensorFlow is imported.

`tf-distill --help`, `tf-distill losses` and `tf-distill losses NAME` answer
at once only if they import nothing heavy, so what they show lives here, in
plain Python: the built-in losses with their one-line summaries, docstring
lines and arguments, their recipes, and the quantization modes of an export.
The modules that own these concepts import them from here (export) or check
themselves against them when imported (`losses`), so the two cannot drift
apart.
"""

import difflib
import importlib.resources
import inspect
import os
import pathlib
import re

# The built-in distillation losses: `name -> (class name, summary)`, as the
# registry (`tf_distill.losses.registry`) holds them once their modules load.
LOSSES = {
    "attention_transfer": (
        "AttentionDistillation",
        "Attention transfer: distance between normalized spatial attention maps",
    ),
    "chunked_head_kd": (
        "ChunkedHeadDistillation",
        "Token-level KD of large vocabularies: the LM heads applied in chunks of positions",
    ),
    "crd": (
        "CRDistillation",
        "Contrastive representation distillation: NCE against memory banks",
    ),
    "ctkd": (
        "CurriculumTemperatureDistillation",
        "Curriculum temperature KD: T²·KL at a temperature learned through gradient reversal",
    ),
    "dist": (
        "CorrelationDistillation",
        "DIST: Pearson inter- and intra-class relations of soft labels",
    ),
    "dkd": (
        "DecoupledDistillation",
        "Decoupled KD: weighted target-class and non-target-class KL",
    ),
    "feature": (
        "FeatureDistillation",
        "Feature matching (mse, l1 or cosine) between tapped layers",
    ),
    "fitnets": (
        "FitNetsDistillation",
        "FitNets hints: MSE between teacher hint and adapted student layer",
    ),
    "kd": (
        "LogitsDistillation",
        "Hinton's soft-label KD: T²·KL(softmax(t/T) ‖ softmax(s/T))",
    ),
    "pkt": (
        "ProbabilisticTransferDistillation",
        "Probabilistic KT: KL between cosine-kernel neighbour distributions",
    ),
    "rkd_angle": (
        "RelationalAngleDistillation",
        "Relational KD: angles of example triplets (Huber)",
    ),
    "rkd_distance": (
        "RelationalDistanceDistillation",
        "Relational KD: mean-normalized pairwise distances (Huber)",
    ),
    "similarity_preserving": (
        "SimilarityPreservingDistillation",
        "Similarity-preserving KD: row-normalized batch Gram matrices",
    ),
    "token_kd": (
        "TokenDistillation",
        "Token-level KD for language models: forward/reverse KL, GKD's JSD(β), skew KL (α)",
    ),
    "uld": (
        "UniversalLogitDistillation",
        "Universal Logit Distillation: teacher and student with different tokenizers",
    ),
    "topk_kd": (
        "TopKDistillation",
        "KD from a top-k teacher cache: KL over the k kept classes and the rest",
    ),
}

# What `tf-distill losses NAME` shows beyond the summary, as
# `tf_distill.losses.describe_loss` reads it from each class: `name ->
# (the docstring's first line, {argument: default})`.
DETAILS = {
    "attention_transfer": (
        "Attention transfer (Zagoruyko & Komodakis, ICLR 2017).",
        {"power": 2.0, "teacher_layer_name": None, "student_layer_name": None, "teacher": None},
    ),
    "chunked_head_kd": (
        "Token-level distillation with the LM heads applied in chunks (large vocabularies).",
        {
            "divergence": "forward_kl",
            "temperature": 1.0,
            "beta": 0.5,
            "alpha": 0.1,
            "chunk_size": 256,
            "teacher": None,
        },
    ),
    "crd": (
        "Contrastive representation distillation (Tian et al., ICLR 2020).",
        {
            "teacher_layer_name": None,
            "student_layer_name": None,
            "feature_dim": 128,
            "num_negatives": 4096,
            "nce_temperature": 0.07,
            "momentum": 0.5,
            "num_examples": None,
            "negatives": "other_classes",
            "teacher": None,
        },
    ),
    "ctkd": (
        "Curriculum temperature knowledge distillation (Li et al., AAAI 2023).",
        {
            "lambda_max": 1.0,
            "curriculum_epochs": 10,
            "min_temperature": 1.0,
            "temperature_range": 20.0,
            "initial_temperature": None,
            "teacher": None,
        },
    ),
    "dist": (
        "DIST, relation-matching KD from a stronger teacher (Huang et al. 2022).",
        {"beta": 1.0, "gamma": 1.0, "temperature": 4.0, "teacher": None},
    ),
    "dkd": (
        "Decoupled knowledge distillation (Zhao et al., CVPR 2022).",
        {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "teacher": None},
    ),
    "feature": (
        "Distills intermediate features, as `keras.distillation` does.",
        {"loss": "mse", "teacher_layer_name": None, "student_layer_name": None, "teacher": None},
    ),
    "fitnets": (
        "FitNets hint training (Romero et al., ICLR 2015).",
        {"teacher_layer_name": None, "student_layer_name": None, "teacher": None},
    ),
    "kd": (
        "Soft-label distillation from the teacher's logits (Hinton et al. 2015).",
        {
            "temperature": 3.0,
            "loss": "kl_divergence",
            "beta": 0.5,
            "standardize": False,
            "teacher": None,
        },
    ),
    "pkt": (
        "Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018).",
        {"teacher_layer_name": None, "student_layer_name": None, "teacher": None},
    ),
    "rkd_angle": (
        "Angle-wise relational KD (Park et al., CVPR 2019).",
        {"teacher_layer_name": None, "student_layer_name": None, "teacher": None},
    ),
    "rkd_distance": (
        "Distance-wise relational KD (Park et al., CVPR 2019).",
        {"teacher_layer_name": None, "student_layer_name": None, "teacher": None},
    ),
    "similarity_preserving": (
        "Similarity-preserving KD (Tung & Mori, ICCV 2019).",
        {"teacher_layer_name": None, "student_layer_name": None, "teacher": None},
    ),
    "token_kd": (
        "Token-level distillation of language models (Agarwal et al. 2024).",
        {
            "divergence": "forward_kl",
            "temperature": 1.0,
            "beta": 0.5,
            "alpha": 0.1,
            "chunk_size": None,
            "teacher": None,
        },
    ),
    "uld": (
        "Universal Logit Distillation (Boizard et al. 2024) across tokenizers.",
        {"temperature": 1.0, "teacher": None},
    ),
    "topk_kd": (
        "Hinton's KD from a top-k teacher cache, bucketed (Hinton et al. 2015).",
        {"temperature": 1.0, "teacher": None},
    ),
}

# The recipes (`NAME.yaml`: a run config of the method, with its measured
# result), package data installed with the package; `examples/recipes` in the
# repository links here.
RECIPES_DIR = importlib.resources.files("tf_distill").joinpath("recipes")

# A paper reference in a docstring's first line: "(Hinton et al. 2015)",
# "(Zhao et al., CVPR 2022)".
_REFERENCE = re.compile(r"\(([^()]*\b(?:19|20)\d\d)\)")

# The quantization modes of `tf_distill.export.export_litert`.
QUANTIZATION_MODES = ("float32", "dynamic", "float16", "int8")


def describe_losses():
    """`[(name, class name, summary)]` for every built-in loss, sorted by name."""
    return [(name, *LOSSES[name]) for name in sorted(LOSSES)]


def unknown_loss(name, known):
    """The `ValueError` for a loss name not in `known`, naming the closest."""
    close = difflib.get_close_matches(name.strip().lower(), known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"Unknown distillation loss. Expected one of {known}. Received: {name!r}.{hint}"
    )


def describe_loss(name, recipes_dir=None):
    """What `tf-distill losses NAME` shows about a built-in loss, without TensorFlow.

    The same dict as `tf_distill.losses.describe_loss`, which reads it from the
    class; see there.

    Raises:
        ValueError: for an unknown name, listing the names and the closest one.
    """
    key = name.strip().lower()
    if key not in LOSSES:
        raise unknown_loss(name, sorted(LOSSES))
    class_name, summary = LOSSES[key]
    description, arguments = DETAILS[key]
    return loss_description(key, class_name, summary, description, dict(arguments), recipes_dir)


def loss_description(name, class_name, summary, description, arguments, recipes_dir=None):
    """The dict of `describe_loss`: these, the paper, an example config and the recipe.

    Args:
        name: The registry name.
        class_name: The class's name.
        summary: The registry's one line.
        description: The first line of the class's docstring; a paper
            reference in parentheses at its end is the paper.
        arguments: `{argument: default}` of the class, in order;
            `inspect.Parameter.empty` for a required one.
        recipes_dir: The folder of recipes; defaults to `RECIPES_DIR`.
    """
    reference = _REFERENCE.search(description)
    example = {"name": name}
    example.update(
        (argument, default)
        for argument, default in arguments.items()
        if default is not None and default is not inspect.Parameter.empty
    )
    folder = RECIPES_DIR if recipes_dir is None else recipes_dir
    if isinstance(folder, (str, os.PathLike)):
        folder = pathlib.Path(folder)
    recipe = folder.joinpath(f"{name}.yaml")
    recipe_text = recipe.read_text(encoding="utf-8") if recipe.is_file() else None
    return {
        "name": name,
        "class_name": class_name,
        "summary": summary,
        "description": description,
        "paper": reference.group(1) if reference else None,
        "arguments": arguments,
        "example": example,
        "recipe": str(recipe) if recipe_text is not None else None,
        "recipe_text": recipe_text,
    }
