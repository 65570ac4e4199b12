"""The cluster files validate against what reads them: the launcher YAMLs against Ray's own
cluster-config schema (`ray/autoscaler/ray-schema.json`) and Ray's own `validate_config`; the KubeRay
manifests by structure; and every job command they carry composes with this repository's Hydra configs."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex

import jsonschema
import pytest
import ray
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from ray.autoscaler._private.util import prepare_config, validate_config

from mmdist.tune import check_sweep_config
from tests.conftest import CONFIG_DIR, REPO

CLUSTER = REPO / "cluster"


def ray_schema() -> dict:
    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as handle:
        return json.load(handle)


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name", ["aws.yaml", "fake_multinode.yaml"])
def test_launcher_yaml_validates_against_rays_schema(name):
    config = load(name)
    jsonschema.validate(config, ray_schema())
    validate_config(config)


def test_aws_yaml_passes_rays_own_preparation():
    # what `ray up` does before launching: merge the AWS defaults, fill per-type limits, validate
    prepared = prepare_config(load("aws.yaml"))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def test_schema_rejects_a_broken_copy():
    config = load("aws.yaml")
    for breakage in (
        lambda c: c.update(max_worker=4),                                                  # misspelt key
        lambda c: c["available_node_types"]["gpu_a100_x8"].update(min_workers="0"),        # wrong type
        lambda c: c["available_node_types"]["gpu_a100_x8"]["resources"].update(GPU=0.5),   # fractional
        lambda c: c["available_node_types"]["cpu_decode"].pop("node_config"),              # required
    ):
        broken = copy.deepcopy(config)
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_config(broken)


def test_aws_cluster_has_cpu_head_gpu_groups_from_zero_and_a_decode_group():
    config = load("aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_groups = {name: spec for name, spec in types.items() if spec["resources"].get("GPU", 0) > 0}
    assert len(gpu_groups) >= 1 and all(spec["min_workers"] == 0 for spec in gpu_groups.values())
    decode = [spec for spec in types.values() if spec.get("labels", {}).get("mmdist/role") == "decode"]
    assert len(decode) == 1 and decode[0]["min_workers"] == 0 and decode[0]["resources"].get("GPU", 0) == 0
    # the global cap admits every group at its maximum
    assert config["max_workers"] >= sum(spec.get("max_workers", 0) for name, spec in types.items() if spec is not head)
    # 64 GPUs fit in one group at its maximum (the scale the README designs for)
    assert max(spec["max_workers"] * spec["resources"]["GPU"] for spec in gpu_groups.values()) >= 64


def kuberay_documents() -> dict:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text())}


def test_kuberay_cluster_autoscales_gpu_and_decode_groups_from_zero():
    documents = kuberay_documents()
    assert set(documents) == {"RayCluster", "RayJob"}
    cluster = documents["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["spec"]["enableInTreeAutoscaling"] is True
    assert cluster["spec"]["rayVersion"] == ray.__version__
    groups = {group["groupName"]: group for group in cluster["spec"]["workerGroupSpecs"]}
    for group in groups.values():
        assert group["minReplicas"] == 0 and group["replicas"] == 0 and group["maxReplicas"] >= 1
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"] == container["resources"]["requests"]  # guaranteed QoS
        assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= {env["name"] for env in container["env"]}
    gpus = [int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) for g in groups.values()]
    assert max(gpus) > 0 and 0 in gpus  # a GPU group and a CPU (decode) group
    head_container = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert documents["RayJob"]["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]


def job_overrides(command: str, job: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index(job) + 1:]


def test_the_rayjob_entrypoint_composes_with_the_sweep_config():
    entrypoint = kuberay_documents()["RayJob"]["spec"]["entrypoint"]
    overrides = job_overrides(entrypoint, "jobs/sweep.py")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("sweep", overrides=overrides), resolve=True, throw_on_missing=True)
    assert cfg["trainer"]["use_gpu"] is True and cfg["model"]["name"] == "base"
    assert cfg["sweep"]["storage_path"].startswith("s3://") and cfg["trainer"]["storage_path"].startswith("s3://")
    assert cfg["validation"]["path"].startswith("s3://")  # the sweep's metric is a held-out one
    per_trial_gpus = cfg["trainer"]["num_workers"]
    assert per_trial_gpus * cfg["sweep"]["max_concurrent"] <= 64


def readme_job_commands() -> list[tuple[str, list[str]]]:
    """(job, overrides) of every `python jobs/train.py|sweep.py ...` command in cluster/README.md's
    code blocks, continuation lines joined and <placeholders> filled in."""
    text = (CLUSTER / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            match = re.search(r"python (jobs/(train|sweep)\.py)(.*)", command)
            if match:
                words = [re.sub(r"<[^>]+>", "/placeholder", word) for word in shlex.split(match.group(3))]
                commands.append((match.group(2), words))
    return commands


def test_readme_commands_compose_with_the_configs():
    commands = readme_job_commands()
    assert {job for job, _ in commands} == {"train", "sweep"} and len(commands) >= 4
    for job, overrides in commands:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = OmegaConf.to_container(compose(job, overrides=overrides), resolve=True, throw_on_missing=True)
        if job == "sweep":
            check_sweep_config(cfg["sweep"])
        if cfg["trainer"]["use_gpu"]:
            assert cfg["data"]["batch_size"] % cfg["trainer"]["num_workers"] == 0, overrides
