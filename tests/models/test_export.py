"""Export: checkpoint -> model.safetensors + model.json, bit for bit, loadable everywhere a checkpoint is."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from mmdist.models import build_model, load_matching_state_dict
from mmdist.models.checkpoint import (
    EXPORT_CONFIG_FILE,
    EXPORT_WEIGHTS_FILE,
    load_model_state,
    load_run_config,
    load_trained,
    local_checkpoint_dir,
    write_manifest,
)
from mmdist.models.export import export_model
from mmdist.models.warm_start import load_state_dict_exactly
from tests.eval.conftest import write_checkpoint


def scrambled(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and buffer set to random values (codebook EMA sums and counts, batch-norm
    statistics, step counters), so a round trip that dropped or re-initialised any entry shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=generator))
            else:
                value.copy_(torch.randint(0, 1000, value.shape, generator=generator))
    return model


@pytest.fixture
def trained(tmp_path, tiny_cfg, data_cfg):
    """A checkpoint folder (ZeRO-0 layout) of a scrambled tiny model with a codebook, its run config, the model."""
    model = scrambled(build_model(tiny_cfg, data_cfg))
    run_config = {
        "model": dict(tiny_cfg, init_checkpoint="s3://old/warm-start"),
        "data": dict(copy.deepcopy(data_cfg), path="s3://bucket/clips", batch_size=32),
        "recipe": {"name": "mc3_vq", "modalities": ["video", "audio", "text"], "temperature": 0.07},
        "trainer": {"zero_stage": 0},
    }
    return write_checkpoint(tmp_path / "checkpoint", model, run_config), run_config, model


def test_round_trip_is_bit_exact_buffers_included(trained, tmp_path):
    folder, _, model = trained
    out = tmp_path / "export"
    export_model(folder, str(out))

    expected = model.state_dict()
    written = load_file(out / EXPORT_WEIGHTS_FILE)  # read with safetensors itself, not through mmdist
    assert sorted(written) == sorted(expected)
    for name, value in expected.items():
        assert written[name].dtype == value.dtype and torch.equal(written[name], value), name
    assert written["codes.quantizer.ema_count"].dtype == torch.float32
    assert "codes.quantizer.ema_sum" in written and "encoders.audio.backbone.0.1.running_var" in written

    reloaded = load_model_state(str(out))
    assert all(torch.equal(reloaded[name], value) for name, value in expected.items())
    # an export of the export is the same bytes
    export_model(str(out), str(tmp_path / "again"))
    assert (out / EXPORT_WEIGHTS_FILE).read_bytes() == (tmp_path / "again" / EXPORT_WEIGHTS_FILE).read_bytes()


def test_manifest_rebuilds_the_model_and_holds_the_decode_settings(trained, tmp_path):
    folder, run_config, model = trained
    out = tmp_path / "export"
    export_model(folder, str(out))
    manifest = json.loads((out / EXPORT_CONFIG_FILE).read_text())

    assert manifest["recipe"] == run_config["recipe"] and manifest["modalities"] == ["video", "audio", "text"]
    assert manifest["model"] == dict(run_config["model"], init_checkpoint=None)
    assert manifest["data"] == {section: run_config["data"][section] for section in ("video", "audio", "text")}
    assert manifest["source"] == {"checkpoint": folder}
    assert load_run_config(str(out)) == manifest  # what evaluation reads from a checkpoint's run config

    rebuilt = build_model(manifest["model"], manifest["data"])
    load_state_dict_exactly(rebuilt, load_model_state(str(out)), str(out))
    assert all(torch.equal(rebuilt.state_dict()[name], value) for name, value in model.state_dict().items())


def test_warm_start_from_an_export_loads_every_tensor(trained, tmp_path, tiny_cfg, data_cfg):
    folder, _, model = trained
    out = str(tmp_path / "export")
    export_model(folder, out)
    fresh = build_model(tiny_cfg, data_cfg)
    # the trainer's warm start: mmdist.train.loop.setup_engine with model.init_checkpoint=<export>
    report = load_matching_state_dict(fresh, load_model_state(local_checkpoint_dir(out)))
    assert report["skipped"] == {} and report["missing"] == []
    assert torch.equal(fresh.state_dict()["codes.quantizer.embed"], model.state_dict()["codes.quantizer.embed"])


def test_a_checkpoint_of_another_model_is_refused_by_name(trained, tmp_path):
    folder, run_config, model = trained
    state = model.state_dict()
    del state["codes.quantizer.ema_count"]
    state["old_head.weight"] = torch.zeros(2)
    torch.save({"module": state}, os.path.join(folder, "step_00000000", "mp_rank_00_model_states.pt"))
    write_manifest(folder, 0, 1)
    with pytest.raises(ValueError, match=r"missing codes\.quantizer\.ema_count; unexpected old_head\.weight"):
        export_model(folder, str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()


def test_export_to_s3_and_back(trained, s3_env, s3_server):
    folder, run_config, model = trained
    uri = f"{s3_env}/exports/tiny"
    export_model(folder, uri, endpoint_url=s3_server.endpoint_url)
    state, config, read_from = load_trained(uri, endpoint_url=s3_server.endpoint_url)
    assert read_from == uri and config["recipe"]["name"] == "mc3_vq"
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())
