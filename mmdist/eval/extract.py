"""The extraction job: a Ray Data pipeline from clip shards to embedding Parquet files (SPEC Sec. 5).

    build_dataset(keep_metadata=True)       decoded clips + ids + labels (centre crops, eval mode)
      -> map_batches(EmbeddingExtractor)    actor pool, one model copy per actor, GPU when present
      -> write_parquet(out)                 one row per clip (mmdist.eval.embed), local or s3://

The weights travel through the object store (`ray.put` once, every actor reads them), so actors on
any node of a cluster can load them without a shared file system.
"""

from __future__ import annotations

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import torch

from mmdist.data.pipeline import METADATA_COLUMNS, LABEL_COLUMNS, build_dataset, decode_stats, new_stats_name
from mmdist.data.storage import list_shards, resolve_filesystem
from mmdist.eval.embed import embed_batch, rows_to_table
from mmdist.models import build_model

PASSTHROUGH_COLUMNS = (*METADATA_COLUMNS, *LABEL_COLUMNS)


class EmbeddingExtractor:
    """`map_batches` callable class: builds the model once per actor, then embeds batch after batch."""

    def __init__(self, model_cfg: dict, data_cfg: dict, state_ref: list, torch_threads: int):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = build_model(model_cfg, data_cfg)
        # wrapped in a list so Ray hands over the reference, and the state is fetched here, once
        model.load_state_dict(ray.get(state_ref[0]))
        self.model = model.to(self.device).eval()

    def __call__(self, batch: dict):
        passthrough = {name: batch[name] for name in PASSTHROUGH_COLUMNS if name in batch}
        return rows_to_table({**passthrough, **embed_batch(self.model, batch)})


def gpus_per_actor(setting) -> float:
    """`eval.extract.gpus_per_actor`: a number, or "auto" = 1 when the Ray cluster has a GPU, else 0."""
    if setting == "auto":
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    if isinstance(setting, bool) or not isinstance(setting, (int, float)) or setting < 0:
        raise ValueError(f"eval.extract.gpus_per_actor must be 'auto' or a number >= 0, got {setting!r}")
    return float(setting)


def extract_embeddings(
    state: dict[str, torch.Tensor],
    model_cfg: dict,
    data_cfg: dict,
    storage_cfg: dict,
    eval_cfg: dict,
    out_dir: str,
    seed: int,
) -> dict:
    """Embed every clip under `data.path` with the weights `state`; write Parquet files into
    `out_dir` (local or s3://; an earlier extraction there is replaced, see `prepare_output`).
    Returns `{"clips": written rows, "dropped": {reason: count}}`."""
    extract = eval_cfg["extract"]
    if extract["actors"] < 1:
        raise ValueError(f"eval.extract.actors must be >= 1, got {extract['actors']}")
    stats_name = new_stats_name()
    clips = build_dataset(data_cfg, storage_cfg, train=False, seed=seed, stats_name=stats_name, keep_metadata=True)
    dataset = clips.map_batches(
        EmbeddingExtractor,
        fn_constructor_kwargs={
            "model_cfg": model_cfg,
            "data_cfg": data_cfg,
            "state_ref": [ray.put(state)],
            "torch_threads": extract["torch_threads"],
        },
        batch_size=eval_cfg["batch_size"],
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=extract["actors"]),
        num_cpus=extract["cpus_per_actor"],
        num_gpus=gpus_per_actor(extract["gpus_per_actor"]),
    )
    filesystem, path = prepare_output(out_dir, storage_cfg)
    dataset.write_parquet(path, filesystem=filesystem)
    files = list_shards(out_dir, storage_cfg["endpoint_url"], retries=storage_cfg["retries"], backoff_s=storage_cfg["backoff_s"])
    written = sum(pq.ParquetFile(filesystem.open_input_file(file)).metadata.num_rows for file in files)
    return {"clips": written, "dropped": decode_stats(stats_name)}


def prepare_output(out_dir: str, storage_cfg: dict) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of `out_dir`, emptied of an earlier extraction's Parquet files. A folder
    holding anything else is refused: a mistyped `out` must never delete unrelated files."""
    filesystem, path = resolve_filesystem(out_dir, storage_cfg["endpoint_url"], retries=storage_cfg["retries"])
    files = [info.path for info in filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
             if info.type == pafs.FileType.File]
    others = [file for file in files if not file.endswith(".parquet")]
    if others:
        raise FileExistsError(f"{out_dir} holds files other than an earlier extraction's Parquet files "
                              f"({others[0]}, ...): write embeddings to a new or empty folder")
    for file in files:
        filesystem.delete_file(file)
    return filesystem, path
