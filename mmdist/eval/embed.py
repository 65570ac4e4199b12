"""Per-clip embedding rows: the eval-mode forward, and their Parquet form.

A row of a clip holds its high-level vectors (`emb_<m> [D]`, text: the clip's own narration), which modalities it has (`present_<m>`), and with a codebook its fine-grained code
indices (`codes_<m> [L_m]`, -1 at invalid positions) and code distribution (`code_probs_<m> [V]`,
CMCM eqs. 4-5). On disk every vector is a Parquet fixed_size_list column: plain Parquet that any
reader (pyarrow, pandas, DuckDB) opens without Ray's tensor extension types.

`emb_<m>` is the space where the modality meets text: the joint space, or for an MMV FAC model
(`head: fac`) the coarse S_vat. A FAC model's rows also hold video's and audio's fine S_va vectors,
`emb_va_video`, `emb_va_audio` `[D_fine]`, where MMV compares vision and audio (SPEC 8.6). Every
metric asks `embedding_columns` which columns to compare.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmdist.contracts import ModelOutput, clip_vectors
from mmdist.models.batch import to_clip_batch
from mmdist.models.heads import FINE_SPACE_MODALITIES, comparison_space
from mmdist.objectives.code_matching import with_code_probs

VECTOR_PREFIXES = ("emb_", "codes_", "code_probs_")
FINE_PREFIX = "emb_va_"


def embedding_columns(rows, *modalities: str) -> list[str]:
    """The columns that hold `modalities`' vectors where they are compared with each other, one per
    modality in order; a single modality: where it is evaluated on its own (probe, clustering).

    `emb_va_<m>` (MMV's fine S_va) when every one of them is video or audio and the rows come from a
    FAC model, else `emb_<m>` (mmdist.models.heads.comparison_space). `rows`: any mapping or
    collection of column names.
    """
    has_fine_space = any(name.startswith(FINE_PREFIX) for name in rows)
    prefix = FINE_PREFIX if comparison_space(modalities, has_fine_space) == "va" else "emb_"
    return [f"{prefix}{m}" for m in modalities]


@torch.no_grad()
def embed_batch(model: torch.nn.Module, columns: dict) -> dict[str, np.ndarray]:
    """Eval-mode forward without gradient -> per-clip numpy rows (see the module docstring).

    `columns`: a batch as Ray Data hands it (numpy arrays or tensors; metadata columns are ignored),
    made the model's ClipBatch on its device here. The model's train/eval mode is restored
    afterwards, so a training loop can call this between steps.
    """
    batch = to_clip_batch(columns, next(model.parameters()).device)
    was_training = model.training
    model.eval()  # batch norms use running statistics; the codebook does no EMA update
    try:
        out: ModelOutput = with_code_probs(model(batch))  # CMCM eqs. 4-5 from the codebook branch's features
    finally:
        model.train(was_training)
    rows = {}
    for m, embedding in out["embeddings"].items():
        rows[f"emb_{m}"] = clip_vectors(m, embedding).float().cpu().numpy()  # text: the own narration's
        rows[f"present_{m}"] = out["present"][m].cpu().numpy().astype(bool)
    for m in FINE_SPACE_MODALITIES:
        if f"{m}_va" in out.get("fac", {}):
            rows[f"{FINE_PREFIX}{m}"] = out["fac"][f"{m}_va"].float().cpu().numpy()  # [B, D_fine]
    for m, probs in out.get("code_probs", {}).items():
        rows[f"code_probs_{m}"] = probs.float().cpu().numpy()  # [B, V]
        indices = out["code_indices"][m].masked_fill(~out["code_mask"][m], -1)  # [B, L_m]
        rows[f"codes_{m}"] = indices.cpu().numpy().astype(np.int32)
    return rows


def rows_to_table(rows: dict[str, np.ndarray]) -> pa.Table:
    """Per-clip rows (vectors `[B, K]`, scalars `[B]`, strings / None in object arrays) -> a pyarrow Table."""
    columns = {}
    for name, value in rows.items():
        array = np.asarray(value)
        if array.ndim == 2:
            flat = pa.array(np.ascontiguousarray(array).ravel())
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
        elif array.ndim == 1:
            columns[name] = pa.array(array.tolist() if array.dtype.kind == "O" else array)
        else:
            raise ValueError(f"row column {name!r} has {array.ndim} dimensions; expected a scalar or a vector per clip")
    return pa.table(columns)


def table_to_rows(table: pa.Table) -> dict[str, np.ndarray]:
    """The inverse of `rows_to_table`: fixed_size_list columns become `[N, K]` arrays, strings object arrays."""
    rows = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            rows[name] = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or column.null_count:
            rows[name] = np.array(column.to_pylist(), dtype=object)
        else:
            rows[name] = column.to_numpy(zero_copy_only=False)
    return rows


def read_embeddings(folder: str) -> dict[str, np.ndarray]:
    """Every Parquet file under `folder` as one set of rows, sorted by clip_id (order-free output)."""
    files = sorted(glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no embedding Parquet file under {folder}")
    table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="default")
    if "clip_id" in table.column_names:
        table = table.sort_by("clip_id")
    return table_to_rows(table)
