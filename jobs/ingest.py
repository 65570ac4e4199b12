"""Cut the clips listed in a JSON Lines manifest and write them as clip shards (SPEC Sec. 1).

    python jobs/ingest.py manifest=<clips.jsonl> out=<path | s3://bucket/prefix> [video.short_side=256 ...]

Exits with status 1 when no entry could be written; bad entries are listed either way.
"""

import sys

import hydra
from omegaconf import DictConfig

from mmdist.config import check_config
from mmdist.data.ingest import ingest


@hydra.main(config_path="../configs", config_name="ingest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    options = check_config(cfg, "ingest")  # every section, resolved (mmdist/config.py)
    summary = ingest(cfg.manifest, cfg.out, options, endpoint_url=cfg.storage.endpoint_url)
    print(summary.format())
    if summary.written == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
