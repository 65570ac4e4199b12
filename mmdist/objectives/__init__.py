"""The objectives of the four papers as pure functions of tensors, and each recipe's total.

Losses take the global batch (gathered once by the caller through `mmdist.dist`).
"""

from mmdist.objectives.clustering import OnlineKMeans, cluster_loss, reconstruction_loss
from mmdist.objectives.code_matching import cmcm_loss, code_distribution, code_similarity, with_code_probs
from mmdist.objectives.consensus import consensus_loss, consensus_scores, consensus_targets
from mmdist.objectives.contrastive import info_nce, mil_nce, mms_loss
from mmdist.objectives.recipes import kmeans_from_recipe, recipe_loss, validate_recipe

__all__ = [
    "OnlineKMeans",
    "cluster_loss",
    "cmcm_loss",
    "code_distribution",
    "code_similarity",
    "consensus_loss",
    "consensus_scores",
    "consensus_targets",
    "info_nce",
    "kmeans_from_recipe",
    "mil_nce",
    "mms_loss",
    "recipe_loss",
    "reconstruction_loss",
    "validate_recipe",
    "with_code_probs",
]
