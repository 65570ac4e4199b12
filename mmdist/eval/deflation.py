"""MMV's deflated image network on still frames (MMV Sec. 3.2, Table 3): what `jobs/deflate.py` runs.

A trained video encoder becomes an image encoder (mmdist.models.deflation): its 3D kernels summed over
time ('n-def'), then its batch-norm gamma / beta re-learnt to give what the video network gives on the
static video of a frame ('def'). Both are evaluated on the middle frame of every clip under `data.path`,
the clips split by source video (mmdist.eval.probe.split_by_group): the fit and the probe learn on one
part, the figures come from the other.

- `l1_gap`: mean |image features - video features of the static video| on the held-out frames, naive and
  fitted (what the fit minimises on the other frames);
- `probe`: a linear probe of `deflate.label` on frozen features (mmdist.eval.probe): the video encoder on
  the clips themselves and on static videos of their frames (references), the naive and the fitted image
  encoders on the frames.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from mmdist.data.pipeline import ClipDecoder
from mmdist.data.storage import read_shard, require_shards, resolve_filesystem
from mmdist.eval.probe import linear_probe, split_by_group
from mmdist.inference import load_model
from mmdist.models.deflation import deflate_video_encoder, fit_deflation, video_features


def deflation_metrics(checkpoint: str, data_cfg: dict, storage_cfg: dict, deflate_cfg: dict, seed: int) -> dict:
    """The metrics.json of `jobs/deflate.py` (see the module docstring) for the trained model at `checkpoint`
    (an export, a checkpoint folder or a training run_dir), on the clips under `data_cfg["path"]` decoded
    as the trained run decoded them."""
    trained = load_model(checkpoint, endpoint_url=storage_cfg["endpoint_url"], device="cpu", data_cfg=data_cfg)
    if "video" not in trained.model.encoders:
        raise ValueError(f"{checkpoint}: the model has no video encoder to deflate")
    encoder = trained.model.encoders["video"].eval()
    clips = decode_clips(trained.data_cfg, storage_cfg, deflate_cfg["max_clips"])
    label = clips[f"label_{deflate_cfg['label']}"]
    keep = clips["has_video"] & np.array([value is not None for value in label])
    video = torch.from_numpy(clips["video"][keep])  # [N, T, H, W, 3] uint8
    labels, groups = np.asarray([str(value) for value in label[keep]]), clips["source_id"][keep]
    frames = video[:, video.shape[1] // 2]  # [N, H, W, 3]: the middle frame of each clip
    test = split_by_group(groups, deflate_cfg["test_fraction"], seed)

    naive = deflate_video_encoder(encoder).eval()
    fitted = deflate_video_encoder(encoder)
    losses = fit_deflation(encoder, fitted, frames[torch.from_numpy(~test)], deflate_cfg["steps"], deflate_cfg["lr"],
                           num_frames=video.shape[1])
    fitted.eval()
    batch_size = deflate_cfg["batch_size"]
    static = frames.unsqueeze(1).expand(-1, video.shape[1], -1, -1, -1)  # [N, T, H, W, 3]
    features = {
        "video_clips": in_batches(lambda x: video_features(encoder, x), video, batch_size),
        "video_static": in_batches(lambda x: video_features(encoder, x), static, batch_size),
        "naive_deflation": in_batches(naive, frames, batch_size),
        "fitted_deflation": in_batches(fitted, frames, batch_size),
    }  # name -> [N, C]
    target = features["video_static"][test]
    return {
        "checkpoint": trained.source,
        "data_path": trained.data_cfg["path"],
        "num_clips": int(len(labels)),
        "num_test": int(test.sum()),
        "fit_l1": {"first": losses[0], "last": losses[-1]} if losses else {},
        "l1_gap": {name: float(np.abs(features[name][test] - target).mean()) for name in ("naive_deflation", "fitted_deflation")},
        "probe": {
            name: linear_probe(values[~test], labels[~test], values[test], labels[test],
                               deflate_cfg["probe_c"], deflate_cfg["probe_max_iter"])
            for name, values in features.items()
        },
    }


def decode_clips(data_cfg: dict, storage_cfg: dict, max_clips: int) -> dict[str, np.ndarray]:
    """The first `max_clips` clips under `data.path` (shard order), decoded in this process with evaluation's
    decoder (centre crops) and their ids and labels; dropped records are left out."""
    endpoint_url, retries = storage_cfg["endpoint_url"], storage_cfg["retries"]
    filesystem, _ = resolve_filesystem(data_cfg["path"], endpoint_url, retries=retries)
    decoder = ClipDecoder(data_cfg, train=False, seed=0, keep_metadata=True)
    tables, rows = [], 0
    for shard in require_shards(data_cfg["path"], "data.path", endpoint_url, retries=retries, backoff_s=storage_cfg["backoff_s"]):
        if rows >= max_clips:
            break
        table = read_shard(shard, filesystem, retries=retries, backoff_s=storage_cfg["backoff_s"])
        tables.append(table.slice(0, max_clips - rows))
        rows += tables[-1].num_rows
    batch, _ = decoder.decode_table(pa.concat_tables(tables))
    return batch


@torch.no_grad()
def in_batches(function, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
    """`function` over `inputs` `batch_size` rows at a time, as one float64 array `[N, ...]`."""
    return torch.cat([function(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)]).double().numpy()
