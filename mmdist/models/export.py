"""Export a trained model to one self-contained folder that loads without DeepSpeed and without pickle.

    out/model.safetensors   the model's state dict, fp32, buffers included (the codebook's EMA state,
                            batch-norm statistics): exactly the tensors evaluation loads from the checkpoint
    out/model.json          what rebuilds the model and decodes its inputs as training did: the `model`
                            config, the `data` decode sections (video fps / size / frames, audio mels,
                            text vocabulary and lengths), the `recipe` (name, modalities) and the source

`model.json` has the keys of a run config that inference reads (`model`, `data`, `recipe`), so
`mmdist.models.checkpoint.load_run_config` reads an export and a checkpoint alike: evaluation
(`checkpoint=<export>`), warm starts (`model.init_checkpoint=<export>`) and `mmdist.load_model` take either.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

import torch

from mmdist.contracts import MODALITIES
from mmdist.models.checkpoint import EXPORT_CONFIG_FILE, EXPORT_WEIGHTS_FILE, load_trained
from mmdist.models.model import build_model
from mmdist.models.warm_start import load_state_dict_exactly

EXPORT_FORMAT = "mmdist-model"
EXPORT_VERSION = 1
DECODE_SECTIONS = MODALITIES  # data.<modality>: how clips become tensors: must match what the model was trained on


def export_manifest(run_config: dict, source: str) -> dict:
    """`model.json` of a trained run (a checkpoint's `mmdist_config.json`, or an earlier export's manifest)."""
    for key in ("model", "data", "recipe"):
        if key not in run_config:
            raise KeyError(f"{source}: the run config has no {key!r} section")
    missing = [f"data.{section}" for section in DECODE_SECTIONS if section not in run_config["data"]]
    if missing:
        raise KeyError(f"{source}: the run config has no {', '.join(missing)}")
    model_cfg = copy.deepcopy(run_config["model"])
    model_cfg["init_checkpoint"] = None  # the export holds every weight: nothing to warm-start from
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "recipe": copy.deepcopy(run_config["recipe"]),
        "modalities": list(model_cfg["modalities"]),
        "model": model_cfg,
        "data": {section: copy.deepcopy(run_config["data"][section]) for section in DECODE_SECTIONS},
        "source": run_config.get("source", {"checkpoint": source}),
    }


def export_model(checkpoint: str, out: str, endpoint_url: str | None = None) -> dict:
    """Write the export of `checkpoint` (an export, a checkpoint folder or a training run_dir; local or
    s3://) into `out` (a local folder or s3://). The model is rebuilt from the manifest and loaded with
    every tensor before anything is written. Returns the manifest."""
    state, run_config, uri = load_trained(checkpoint, endpoint_url)
    manifest = export_manifest(run_config, uri)
    load_state_dict_exactly(build_model(manifest["model"], manifest["data"]), state, uri)
    from mmdist.data.storage import is_remote, resolve_filesystem

    if not is_remote(out):
        write_export(state, manifest, out.removeprefix("file://"))
        return manifest
    import pyarrow.fs

    filesystem, path = resolve_filesystem(out, endpoint_url)
    with tempfile.TemporaryDirectory(prefix="mmdist-export-") as staging:
        write_export(state, manifest, staging)
        pyarrow.fs.copy_files(staging, path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem)
    return manifest


def write_export(state: dict[str, torch.Tensor], manifest: dict, folder: str) -> None:
    """`model.safetensors` (tensors as they are: the caller gives fp32) and `model.json` into a local folder."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    # sorted, and one metadata key (safetensors keeps metadata in a hash map): same state, same bytes
    tensors = {name: state[name].detach().cpu().contiguous() for name in sorted(state)}
    save_file(tensors, os.path.join(folder, EXPORT_WEIGHTS_FILE), metadata={"format": f"{EXPORT_FORMAT}/{EXPORT_VERSION}"})
    with open(os.path.join(folder, EXPORT_CONFIG_FILE), "w") as handle:
        json.dump(manifest, handle, indent=1)
