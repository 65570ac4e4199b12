"""Reading trained weights back from a training run's DeepSpeed checkpoint folder.

A checkpoint folder (local or s3://) holds the DeepSpeed tag folders, a `latest` file naming the
newest tag, and `mmdist_config.json`: the run's resolved config (secrets redacted), enough to
rebuild the model without the run directory.
"""

from __future__ import annotations

import json
import os
import tempfile

import torch

RUN_CONFIG_FILE = "mmdist_config.json"


def load_model_state(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """Full fp32 model state dict from a local DeepSpeed checkpoint folder, any ZeRO stage.

    ZeRO 0-2 save the whole module on rank 0; ZeRO-3 partitions parameters across ranks, so they
    are consolidated from the shards (buffers such as the codebook and batch-norm statistics too).
    """
    tag = _latest_tag(checkpoint_dir)
    tag_dir = os.path.join(checkpoint_dir, tag)
    model_file = os.path.join(tag_dir, "mp_rank_00_model_states.pt")
    if os.path.exists(model_file):
        states = torch.load(model_file, map_location="cpu", weights_only=False)
        return {name: value.float() if value.is_floating_point() else value for name, value in states["module"].items()}
    if os.path.exists(os.path.join(tag_dir, "zero_pp_rank_0_mp_rank_00_model_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag))
    raise FileNotFoundError(f"{checkpoint_dir} is not a DeepSpeed checkpoint (no model states under {tag}/)")


def load_run_config(checkpoint_dir: str) -> dict:
    path = os.path.join(checkpoint_dir, RUN_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{checkpoint_dir} has no {RUN_CONFIG_FILE}: not a checkpoint written by mmdist")
    with open(path) as handle:
        return json.load(handle)


def local_checkpoint_dir(uri: str, endpoint_url: str | None = None) -> str:
    """A local folder holding the checkpoint at `uri`: the folder itself, or a download of s3://..."""
    if "://" not in uri or uri.startswith("file://"):
        return uri.removeprefix("file://")
    import pyarrow.fs

    from mmdist.data.storage import resolve_filesystem

    filesystem, path = resolve_filesystem(uri, endpoint_url)
    target = tempfile.mkdtemp(prefix="mmdist-checkpoint-")
    pyarrow.fs.copy_files(path, target, source_filesystem=filesystem, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return target


def _latest_tag(checkpoint_dir: str) -> str:
    latest = os.path.join(checkpoint_dir, "latest")
    if os.path.exists(latest):
        with open(latest) as handle:
            return handle.read().strip()
    tags = sorted(name for name in os.listdir(checkpoint_dir) if name.startswith("step_"))
    if not tags:
        raise FileNotFoundError(f"{checkpoint_dir} holds no DeepSpeed checkpoint tag")
    return tags[-1]
