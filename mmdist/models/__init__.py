"""Encoders (video, audio, text), heads (joint, FAC, MCN decoders), the codebook branch and the builder.

`build_model(model_cfg, data_cfg)` is the entry point; `model(batch) -> ModelOutput` (see `model.py`), the
batch a ClipBatch (mmdist/contracts.py) that `to_clip_batch` makes of Ray Data's columns.
"""

from mmdist.models.audio import AudioEncoder
from mmdist.models.batch import BatchError, check_batch, to_clip_batch
from mmdist.models.codes import CodeBranch
from mmdist.models.deflation import ImageEncoder, deflate_video_encoder, fit_deflation, video_features
from mmdist.models.heads import Decoder, FACHeads, GatedEmbedding
from mmdist.models.model import MultimodalModel, build_model
from mmdist.models.text import TextEncoder
from mmdist.models.video import VideoEncoder
from mmdist.models.warm_start import load_matching_state_dict

__all__ = [
    "AudioEncoder",
    "BatchError",
    "CodeBranch",
    "Decoder",
    "FACHeads",
    "GatedEmbedding",
    "ImageEncoder",
    "MultimodalModel",
    "TextEncoder",
    "VideoEncoder",
    "build_model",
    "check_batch",
    "deflate_video_encoder",
    "fit_deflation",
    "load_matching_state_dict",
    "to_clip_batch",
    "video_features",
]
