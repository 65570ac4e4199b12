"""Export a trained model: `python jobs/export.py checkpoint=<checkpoint | run_dir | s3://...> out=<dir>`.

Writes out/model.safetensors and out/model.json (mmdist/models/export.py); load it with
`mmdist.load_model(out)`, evaluate it with `jobs/evaluate.py checkpoint=<out>`.
"""

import json

import hydra
from omegaconf import DictConfig

from mmdist.config import check_config
from mmdist.models.export import export_model


@hydra.main(config_path="../configs", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = check_config(cfg, "export")  # every section, resolved (mmdist/config.py)
    manifest = export_model(config["checkpoint"], config["out"], config["storage"]["endpoint_url"])
    summary = {"out": config["out"], "recipe": manifest["recipe"]["name"], "modalities": manifest["modalities"], **manifest["source"]}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
