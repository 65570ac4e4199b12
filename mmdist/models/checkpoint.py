"""Reading trained weights back: a training run's DeepSpeed checkpoint folder, or an export.

A checkpoint folder (local or s3://) holds the DeepSpeed tag folders, a `latest` file naming the
newest tag, `mmdist_config.json`: the run's resolved config (secrets redacted), enough to
rebuild the model without the run directory, and one manifest per training rank
(`mmdist_manifest_rank<r>.json`: the world size, ZeRO stage, step, and every file the rank wrote with
its size). Each rank uploads its manifest after its other files, so a folder is complete when the
manifests of ranks 0..W-1 are all there and every file they list has its listed size
(`checkpoint_gaps`); a worker killed while writing or uploading leaves a folder that fails this. An export folder (mmdist/models/export.py) holds
`model.safetensors` and `model.json`; it is preferred wherever both could serve.

Nothing here unpickles arbitrary objects: checkpoints may come from a shared bucket, and a pickle runs
code as it loads. Model states are read with `torch.load(weights_only=True)` (tensors and plain
containers only). DeepSpeed 0.19 reads its own files with `torch.load(weights_only=False)`, hard-coded
(TorchCheckpointEngine.load on resume, zero_to_fp32 for ZeRO-3 shards); `deepspeed_weights_only()`
forces those calls weights-only too, through torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD, which overrides an
explicit `weights_only=False`. Its optimizer files hold three plain data classes besides tensors,
allow-listed in `deepspeed_safe_globals` (found by loading checkpoints of ZeRO 0-3, fp32 and bf16).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pickle
import shutil
import tempfile

import torch

RUN_CONFIG_FILE = "mmdist_config.json"
EXPORT_WEIGHTS_FILE = "model.safetensors"
EXPORT_CONFIG_FILE = "model.json"
MANIFEST_PREFIX = "mmdist_manifest_rank"  # + <rank>.json
RUN_DIR_EXPORT = "export"  # a training run_dir's export (jobs/export.py out=<run_dir>/export), preferred when present


class IncompleteCheckpointError(FileNotFoundError):
    """A checkpoint folder lacks a rank's manifest or a file (or part of one) that a manifest lists."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds objects outside the weights-only allow-list; it was not unpickled."""


def deepspeed_safe_globals() -> list:
    """What DeepSpeed 0.19's optimizer files (ZeRO 1-3) pickle besides tensors and containers: its loss
    scaler (attributes only), the ZeRO stage enum and the (numel, start) address of each parameter's
    fragment. Constructing them runs no code of the file's choosing."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def load_weights_only(path: str):
    """`torch.load(path)` on CPU, weights only; a file holding anything else raises UnsafeCheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal([path], err) from None


@contextlib.contextmanager
def deepspeed_weights_only(folder: str):
    """Every `torch.load` inside the block is weights-only with `deepspeed_safe_globals` allowed, whatever
    its caller asks (DeepSpeed asks for weights_only=False). A refused file under `folder` raises
    UnsafeCheckpointError naming it. The variable is process-wide while the block runs: other threads'
    loads are only made stricter."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            try:
                yield
            except pickle.UnpicklingError as err:
                if isinstance(err, UnsafeCheckpointError):
                    raise
                files = sorted(glob.glob(os.path.join(folder, "**", "*.pt"), recursive=True))
                raise _refusal(files, err) from None
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def _refusal(paths: list[str], err: Exception) -> UnsafeCheckpointError:
    """The error for a refused load: which files hold which disallowed globals (a static scan of their
    pickles, under the allow-list in force), and torch's own reason."""
    found = {}
    for path in paths:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a torch zip file: torch's reason below says what went wrong
            continue
        if unsafe:
            found[path] = unsafe
    reason = next((line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line), str(err).splitlines()[0])
    where = "; ".join(f"{path} holds {names}" for path, names in found.items()) or ", ".join(paths)
    return UnsafeCheckpointError(
        f"refused to load {where}: only tensors and plain containers are read from a checkpoint (a pickle "
        f"can run code as it loads, and this one was not unpickled). torch: {reason}"
    )


def is_export(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, EXPORT_CONFIG_FILE))


def load_model_state(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """Full fp32 model state dict (parameters and buffers) from a local export or DeepSpeed checkpoint folder.

    ZeRO 0-2 save the whole module on rank 0; ZeRO-3 partitions parameters across ranks, so they
    are consolidated from the shards (buffers such as the codebook and batch-norm statistics too).
    """
    if is_export(checkpoint_dir):
        from safetensors.torch import load_file

        path = os.path.join(checkpoint_dir, EXPORT_WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{checkpoint_dir} has {EXPORT_CONFIG_FILE} but no {EXPORT_WEIGHTS_FILE}")
        return load_file(path)
    tag = latest_tag(checkpoint_dir)
    tag_dir = os.path.join(checkpoint_dir, tag)
    model_file = os.path.join(tag_dir, "mp_rank_00_model_states.pt")
    if os.path.exists(model_file):
        states = load_weights_only(model_file)["module"]
    elif os.path.exists(os.path.join(tag_dir, "zero_pp_rank_0_mp_rank_00_model_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with deepspeed_weights_only(tag_dir):
            states = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag)
    else:
        raise FileNotFoundError(f"{checkpoint_dir} is neither an export ({EXPORT_CONFIG_FILE}) nor a DeepSpeed "
                                f"checkpoint (no model states under {tag}/)")
    return {name: value.float() if value.is_floating_point() else value for name, value in states.items()}


def load_run_config(checkpoint_dir: str) -> dict:
    """The trained run's config: `mmdist_config.json` of a checkpoint, or an export's `model.json`
    (which holds the same `model`, `data` (decode sections) and `recipe` keys)."""
    for name in (EXPORT_CONFIG_FILE, RUN_CONFIG_FILE):
        path = os.path.join(checkpoint_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as handle:
                return parse_run_config(handle.read(), path)
    raise FileNotFoundError(
        f"{checkpoint_dir} has neither {EXPORT_CONFIG_FILE} nor {RUN_CONFIG_FILE}: not an export or checkpoint written by mmdist"
    )


def parse_run_config(content: bytes, path: str) -> dict:
    """A run config file's content, checked: a JSON object with the `model` and `data` sections the
    model is rebuilt from. A truncated or hand-edited file is a ValueError naming `path`."""
    try:
        config = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the checkpoint's config is corrupted") from None
    missing = [key for key in ("model", "data") if not isinstance(config, dict) or not isinstance(config.get(key), dict)]
    if missing:
        raise ValueError(f"{path} has no {' / '.join(missing)} section: the checkpoint's config is corrupted")
    return config


def resolve_trained(path: str) -> str:
    """Where a trained model is read from. An export or checkpoint folder (local or s3://) is itself;
    a training run_dir gives its export (`run_dir/export`) when present, else the checkpoint that its
    `checkpoint.txt` names."""
    from mmdist.data.storage import is_remote

    local = path.removeprefix("file://")
    marker = os.path.join(local, "checkpoint.txt")
    if is_remote(path) or not os.path.isfile(marker):
        return path
    if is_export(os.path.join(local, RUN_DIR_EXPORT)):
        return os.path.join(local, RUN_DIR_EXPORT)
    with open(marker) as handle:
        uri = handle.read().strip()
    if not uri or uri == "None":
        raise FileNotFoundError(f"{marker} names no checkpoint (the run saved none)")
    return uri


def load_trained(path: str, endpoint_url: str | None = None) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(fp32 state dict, run config, the URI read) of a trained model at `path`: an export, a checkpoint
    folder or a training run_dir (`resolve_trained`), local or s3:// (`endpoint_url`: storage.endpoint_url)."""
    uri = resolve_trained(path)
    require_complete_uri(uri, endpoint_url)
    folder = local_checkpoint_dir(uri, endpoint_url)
    try:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"no export or checkpoint folder at {uri}")
        return load_model_state(folder), load_run_config(folder), uri
    finally:
        if folder != uri.removeprefix("file://"):
            shutil.rmtree(folder, ignore_errors=True)  # a download of s3://...


def local_checkpoint_dir(uri: str, endpoint_url: str | None = None) -> str:
    """A local folder holding the checkpoint at `uri`: the folder itself, or a download of s3://..."""
    from mmdist.data.storage import is_remote, resolve_filesystem

    if not is_remote(uri):
        return uri.removeprefix("file://")
    import pyarrow.fs

    filesystem, path = resolve_filesystem(uri, endpoint_url)
    target = tempfile.mkdtemp(prefix="mmdist-checkpoint-")
    pyarrow.fs.copy_files(path, target, source_filesystem=filesystem, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return target


def latest_tag(checkpoint_dir: str) -> str:
    """The DeepSpeed tag a checkpoint folder's `latest` file names, else its last `step_*` folder."""
    latest = os.path.join(checkpoint_dir, "latest")
    if os.path.exists(latest):
        with open(latest) as handle:
            return handle.read().strip()
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"no checkpoint folder at {checkpoint_dir}")
    tags = sorted(name for name in os.listdir(checkpoint_dir) if name.startswith("step_"))
    if not tags:
        raise FileNotFoundError(f"{checkpoint_dir} holds no DeepSpeed checkpoint tag")
    return tags[-1]


def manifest_name(rank: int) -> str:
    return f"{MANIFEST_PREFIX}{rank}.json"


def write_manifest(folder: str, rank: int, world_size: int, **info) -> str:
    """Rank `rank`'s manifest in its local checkpoint folder: every file under `folder` with its size,
    and `info` (step, tag, zero_stage). Written after the files it lists, and uploaded after them."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if not relative.startswith(MANIFEST_PREFIX):
                files[relative] = os.path.getsize(path)
    path = os.path.join(folder, manifest_name(rank))
    with open(f"{path}.tmp", "w") as handle:
        json.dump({"rank": rank, "world_size": world_size, **info, "files": files}, handle, indent=1)
    os.replace(f"{path}.tmp", path)
    return path


def read_manifests(filesystem, path: str) -> tuple[dict[int, dict], list[str]]:
    """(manifests by rank, gaps) of the checkpoint folder `path` on a pyarrow filesystem. A gap is one
    thing the folder lacks: a rank's manifest, a listed file, or bytes of one (a cut-short upload)."""
    import pyarrow.fs as pafs

    listing = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    sizes = {info.path[len(path.rstrip("/")) + 1:]: info.size for info in listing if info.type == pafs.FileType.File}
    manifests = {}
    for name in sorted(sizes):
        if name.startswith(MANIFEST_PREFIX) and name.endswith(".json"):
            with filesystem.open_input_stream(f"{path.rstrip('/')}/{name}") as handle:
                try:
                    manifest = json.loads(handle.read())
                except ValueError:
                    continue  # a cut-short manifest: its rank counts as missing
            manifests[manifest["rank"]] = manifest
    if not manifests:
        return {}, [f"no {MANIFEST_PREFIX}*.json (each rank writes its manifest last)"]
    world_sizes = {manifest["world_size"] for manifest in manifests.values()}
    if len(world_sizes) > 1:
        return manifests, [f"manifests of different world sizes {sorted(world_sizes)}"]
    world_size = world_sizes.pop()
    gaps = [f"rank {rank} of {world_size} wrote no {manifest_name(rank)}" for rank in range(world_size) if rank not in manifests]
    for rank in sorted(manifests):
        for name, size in manifests[rank]["files"].items():
            if name not in sizes:
                gaps.append(f"{name} (rank {rank}) is missing")
            elif sizes[name] != size:
                gaps.append(f"{name} (rank {rank}) has {sizes[name]} of {size} bytes")
    return manifests, gaps


def require_complete(filesystem, path: str, name: str) -> dict:
    """Rank 0's manifest (world_size, zero_stage, step, tag) of a complete checkpoint folder; else an
    IncompleteCheckpointError, one line naming `name` (the folder as the user gave it) and what is missing."""
    manifests, gaps = read_manifests(filesystem, path)
    if gaps:
        shown = "; ".join(gaps[:4]) + (f"; and {len(gaps) - 4} more" if len(gaps) > 4 else "")
        raise IncompleteCheckpointError(
            f"{name} is an incomplete checkpoint: {shown}. It was cut short while being written or uploaded "
            "(a killed worker); use a complete one, such as the run's latest (its run_dir/checkpoint.txt)"
        )
    return manifests[0]


def require_complete_uri(uri: str, endpoint_url: str | None = None, name: str | None = None) -> dict | None:
    """`require_complete` for a checkpoint URI (local or s3://), read without downloading the weights;
    None for an export (written by jobs/export.py, not by training ranks) or a folder that does not exist."""
    import pyarrow.fs as pafs

    from mmdist.data.storage import resolve_filesystem

    filesystem, path = resolve_filesystem(uri, endpoint_url)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None  # the caller names a missing folder in its own words
    if filesystem.get_file_info(f"{path.rstrip('/')}/{EXPORT_CONFIG_FILE}").type == pafs.FileType.File:
        return None
    return require_complete(filesystem, path, name or uri)
