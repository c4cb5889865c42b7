"""What the `tf-distill` command lists before TensorFlow is imported.

`tf-distill --help` and `tf-distill losses` answer at once only if they import
nothing heavy, so the names they show live here, in plain Python: the built-in
losses with their one-line summaries, and the quantization modes of an
export. The modules that own these concepts import them from here (export) or
check themselves against them when imported (`losses`), so the two cannot
drift apart.
"""

# The built-in distillation losses: `name -> (class name, summary)`, as the
# registry (`tf_distill.losses.registry`) holds them once their modules load.
LOSSES = {
    "attention_transfer": (
        "AttentionDistillation",
        "Attention transfer: distance between normalized spatial attention maps",
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
    "topk_kd": (
        "TopKDistillation",
        "KD from a top-k teacher cache: KL over the k kept classes and the rest",
    ),
}

# The quantization modes of `tf_distill.export.export_litert`.
QUANTIZATION_MODES = ("float32", "dynamic", "float16", "int8")


def describe_losses():
    """`[(name, class name, summary)]` for every built-in loss, sorted by name."""
    return [(name, *LOSSES[name]) for name in sorted(LOSSES)]
