"""Distillation losses: pure tensor functions plus thin serializable classes.

Grouped by the kind of knowledge they transfer: soft labels (`soft_labels`),
token-level divergences of language models (`tokens`; `lm_head` for large
vocabularies, the LM heads applied in chunks), across tokenizers
(`cross_tokenizer`), KD from a top-k
teacher cache (`topk`), other logit-based methods (`logit_methods`, `ctkd`),
features (`features`), relations between examples (`relations`) and
contrast against memory banks of embeddings (`contrastive`, its state in
`memory_bank`). The student's own loss on the true labels is in `labels`.

Every loss class is named `*Distillation`, as in `keras.distillation`; the
classes renamed to that form keep their former names (`DecoupledKD`,
`DIST`, `CTKD`, `FitNets`, `AttentionTransfer`, `RKDDistance`, `RKDAngle`,
`SimilarityPreserving`, `PKT`) as aliases, under which saved configs load.
"""

from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.contrastive import CRDistillation
from tf_distill.losses.contrastive import crd_loss
from tf_distill.losses.contrastive import nce_contrast_loss
from tf_distill.losses.cross_tokenizer import UniversalLogitDistillation
from tf_distill.losses.cross_tokenizer import universal_logit_distillation
from tf_distill.losses.ctkd import CTKD
from tf_distill.losses.ctkd import CurriculumTemperatureDistillation
from tf_distill.losses.ctkd import GlobalTemperature
from tf_distill.losses.ctkd import reverse_gradient
from tf_distill.losses.features import AttentionDistillation
from tf_distill.losses.features import AttentionTransfer
from tf_distill.losses.features import FeatureDistillation
from tf_distill.losses.features import FitNets
from tf_distill.losses.features import FitNetsDistillation
from tf_distill.losses.features import attention_transfer
from tf_distill.losses.features import feature_cosine
from tf_distill.losses.features import feature_l1
from tf_distill.losses.features import feature_mse
from tf_distill.losses.features import fitnets_hint
from tf_distill.losses.labels import crossentropy_from_logits
from tf_distill.losses.lm_head import ChunkedHeadDistillation
from tf_distill.losses.lm_head import HeadOutputs
from tf_distill.losses.lm_head import LinearHead
from tf_distill.losses.lm_head import chunked_head_crossentropy
from tf_distill.losses.lm_head import chunked_head_divergence
from tf_distill.losses.logit_methods import DIST
from tf_distill.losses.logit_methods import CorrelationDistillation
from tf_distill.losses.logit_methods import DecoupledDistillation
from tf_distill.losses.logit_methods import DecoupledKD
from tf_distill.losses.logit_methods import decoupled_kd
from tf_distill.losses.logit_methods import dist
from tf_distill.losses.memory_bank import ContrastMemory
from tf_distill.losses.memory_bank import EmbeddingHead
from tf_distill.losses.memory_bank import momentum_update
from tf_distill.losses.registry import check_catalog
from tf_distill.losses.registry import describe
from tf_distill.losses.registry import describe_loss
from tf_distill.losses.registry import deserialize
from tf_distill.losses.registry import get
from tf_distill.losses.registry import names
from tf_distill.losses.registry import register
from tf_distill.losses.registry import register_former_name
from tf_distill.losses.registry import serialize
from tf_distill.losses.relations import PKT
from tf_distill.losses.relations import ProbabilisticTransferDistillation
from tf_distill.losses.relations import RelationalAngleDistillation
from tf_distill.losses.relations import RelationalDistanceDistillation
from tf_distill.losses.relations import RKDAngle
from tf_distill.losses.relations import RKDDistance
from tf_distill.losses.relations import SimilarityPreserving
from tf_distill.losses.relations import SimilarityPreservingDistillation
from tf_distill.losses.relations import pkt
from tf_distill.losses.relations import rkd_angle
from tf_distill.losses.relations import rkd_distance
from tf_distill.losses.relations import similarity_preserving
from tf_distill.losses.soft_labels import LogitsDistillation
from tf_distill.losses.soft_labels import jensen_shannon
from tf_distill.losses.soft_labels import reverse_kl
from tf_distill.losses.soft_labels import soft_label_kl
from tf_distill.losses.soft_labels import standardize_logits
from tf_distill.losses.tokens import TOKEN_DIVERGENCES
from tf_distill.losses.tokens import TokenDistillation
from tf_distill.losses.tokens import generalized_jsd
from tf_distill.losses.tokens import skew_kl
from tf_distill.losses.tokens import skew_reverse_kl
from tf_distill.losses.tokens import token_divergence
from tf_distill.losses.topk import TopKDistillation
from tf_distill.losses.topk import pack_topk
from tf_distill.losses.topk import topk_kl
from tf_distill.losses.topk import topk_targets
from tf_distill.losses.topk import unpack_topk

# Every built-in loss is registered now: the catalog the command lists without
# TensorFlow must name the same ones.
check_catalog()

__all__ = [
    "UniversalLogitDistillation",
    "universal_logit_distillation",
    "AttentionDistillation",
    "AttentionTransfer",
    "CRDistillation",
    "CTKD",
    "ChunkedHeadDistillation",
    "ContrastMemory",
    "CorrelationDistillation",
    "CurriculumTemperatureDistillation",
    "DIST",
    "DecoupledDistillation",
    "DecoupledKD",
    "DistillationLoss",
    "EmbeddingHead",
    "FeatureDistillation",
    "FitNets",
    "FitNetsDistillation",
    "GlobalTemperature",
    "HeadOutputs",
    "LinearHead",
    "LogitsDistillation",
    "PKT",
    "ProbabilisticTransferDistillation",
    "RKDAngle",
    "RKDDistance",
    "RelationalAngleDistillation",
    "RelationalDistanceDistillation",
    "SimilarityPreserving",
    "SimilarityPreservingDistillation",
    "TOKEN_DIVERGENCES",
    "TokenDistillation",
    "TopKDistillation",
    "attention_transfer",
    "chunked_head_crossentropy",
    "chunked_head_divergence",
    "crd_loss",
    "crossentropy_from_logits",
    "decoupled_kd",
    "describe",
    "describe_loss",
    "deserialize",
    "dist",
    "feature_cosine",
    "feature_l1",
    "feature_mse",
    "fitnets_hint",
    "generalized_jsd",
    "get",
    "jensen_shannon",
    "momentum_update",
    "names",
    "nce_contrast_loss",
    "pack_topk",
    "pkt",
    "reduce_per_example",
    "register",
    "register_former_name",
    "reverse_gradient",
    "reverse_kl",
    "rkd_angle",
    "rkd_distance",
    "serialize",
    "similarity_preserving",
    "skew_kl",
    "skew_reverse_kl",
    "soft_label_kl",
    "standardize_logits",
    "token_divergence",
    "topk_kl",
    "topk_targets",
    "unpack_topk",
]
