"""The ecosystem backbones (torchvision video, 2-D ResNet audio, open_clip text tower) and pretrained
weight files (mmdist/models/pretrained.py).

References: torchvision's and open_clip's own forward passes, hand-worked feature-map sizes, and the
weights read back from files written by safetensors / torch.save.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from open_clip.transformer import TextTransformer
from safetensors.torch import save_file
from torchvision.models import video as tv_video

from mmdist.data.storage import write_bytes
from mmdist.models import build_model
from mmdist.models.audio import build_audio_encoder
from mmdist.config import ConfigError
from mmdist.models.pretrained import PretrainedWeightsError, load_encoder_weights, load_pretrained, read_weights
from mmdist.models.text import build_text_encoder
from mmdist.models.torchvision_video import TorchvisionVideoEncoder, feature_map
from mmdist.models.video import build_video_encoder
from tests.models.conftest import preset

BPE_DATA = {"video": {"num_frames": 8, "size": 64}, "audio": {"n_mels": 40},
            "text": {"tokenizer": "clip_bpe", "vocab_size": 64, "max_tokens": 8}}


def video_cfg(arch: str) -> dict:
    return dict(preset("base_tv")["video"], arch=arch)


def random_video(batch: int, frames: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, generator=generator)


def reseeded(build, seed: int):
    torch.manual_seed(seed)
    return build().eval()


@pytest.mark.parametrize(
    ("arch", "frames", "size", "grid"),
    [
        # strides (1, 2, 2) stem then 2 in every axis x3, 'same' padding: (ceil(8/8), ceil(32/16), ceil(32/16))
        ("r2plus1d_18", 8, 32, (1, 2, 2)),
        ("r3d_18", 8, 32, (1, 2, 2)),
        ("mc3_18", 4, 32, (4, 2, 2)),  # 3-D stem only: no temporal stride
        # S3D, by hand: T 8 -conv/2-> 4 -pool(3, /2, pad 1)-> 2 -pool(2, /2)-> 1; side 64 -> 32 -> 16 -> 8 -> 4 -> 2
        ("s3d", 8, 64, (1, 2, 2)),
        # side 48 -> 24 -> 12 -> 6 -> 3 -pool(2, /2, no pad)-> 1: floored, where ceil(48 / 32) would give 2
        ("s3d", 8, 48, (1, 1, 1)),
    ],
)
def test_torchvision_video_shapes_and_normalisation(arch, frames, size, grid):
    encoder = build_video_encoder(video_cfg(arch), frames, size).eval()
    assert encoder.grid(frames, size) == grid
    video = random_video(2, frames, size)
    with torch.no_grad():
        fine = encoder(video)
        # independent: Kinetics normalisation by hand, then torchvision's own layers
        mean = torch.tensor(video_cfg(arch)["mean"]).view(1, 3, 1, 1, 1)
        std = torch.tensor(video_cfg(arch)["std"]).view(1, 3, 1, 1, 1)
        x = (video.permute(0, 4, 1, 2, 3).float() / 255 - mean) / std
        expected = feature_map(encoder.backbone, arch, x)
    assert fine.shape == (2, math.prod(grid), encoder.out_channels)
    torch.testing.assert_close(fine, expected.flatten(2).transpose(1, 2))


def test_video_resnet_features_are_torchvisions_own_before_its_classifier(tmp_path):
    """A file of torchvision's own r2plus1d_18 state dict (classifier included) loads; the mean of the fine
    features through its classifier is torchvision's forward."""
    torch.manual_seed(1)
    reference = tv_video.r2plus1d_18(weights=None).eval()
    path = tmp_path / "r2plus1d_18.pt"
    torch.save(reference.state_dict(), path)
    encoder = reseeded(lambda: build_video_encoder(video_cfg("r2plus1d_18"), 8, 32), 2)
    ignored = load_encoder_weights(encoder, read_weights(str(path)), str(path))
    assert ignored == ["fc.bias", "fc.weight"]
    video = random_video(2, 8, 32)
    with torch.no_grad():
        pooled = encoder(video).mean(dim=1)  # [B, 512]
        x = (video.permute(0, 4, 1, 2, 3).float() / 255 - encoder.mean) / encoder.std
        torch.testing.assert_close(reference.fc(pooled), reference(x), rtol=1e-4, atol=1e-5)


def test_mvit_lays_out_16_frames_of_224_and_refuses_other_sizes():
    cfg = video_cfg("mvit_v2_s")
    with pytest.raises(ConfigError, match=r"data\.video\.num_frames=16 and data\.video\.size=224"):
        build_video_encoder(cfg, 8, 64)
    with torch.device("meta"):  # shapes only: a real 16 x 224 x 224 forward costs ~64 GFLOPs
        encoder = TorchvisionVideoEncoder("mvit_v2_s", cfg["mean"], cfg["std"], "mean")
        fine = encoder(torch.empty(2, 16, 224, 224, 3, dtype=torch.uint8))
    # conv_proj strides (2, 4, 4), then three poolings of (1, 2, 2): 8 x 7 x 7 positions, class token dropped
    assert encoder.grid(16, 224) == (8, 7, 7) and fine.shape == (2, 8 * 7 * 7, 768) and encoder.out_channels == 768


def test_too_small_input_names_the_data_keys():
    with pytest.raises(ConfigError, match=r"data\.video\.num_frames=8 .*data\.video\.size=16"):
        build_video_encoder(video_cfg("s3d"), 8, 16)


def test_resnet2d_audio_shapes_and_mask():
    cfg = dict(preset("tv_tiny")["audio"])
    encoder = build_audio_encoder(cfg, n_mels=40).eval()
    mel = torch.randn(2, 40, 200)
    frame_mask = torch.arange(200).expand(2, 200) < torch.tensor([[200], [100]])  # clip 2: 100 real frames
    with torch.no_grad():
        fine, mask = encoder(mel, frame_mask)
        # padded frames are zeros after standardisation: what lies beyond them does not matter
        again, _ = encoder(torch.where(frame_mask.unsqueeze(1), mel, torch.full_like(mel, 9.0)), frame_mask)
    # stride 32 on the frame axis ('same' padding): ceil(200 / 32) = 7 positions, ceil(100 / 32) = 4 real
    assert fine.shape == (2, 7, 512) and encoder.out_channels == 512
    assert mask.tolist() == [[True] * 7, [True] * 4 + [False] * 3]
    torch.testing.assert_close(fine, again)


def tiny_text_cfg() -> dict:
    return dict(preset("tv_tiny")["text"])


def test_clip_text_tower_matches_open_clip_at_the_end_token():
    """open_clip's TextTransformer.forward pools the end token (the largest id) and projects it: our
    fine feature there, before the ReLU, is that vector."""
    encoder = build_text_encoder(tiny_text_cfg(), vocab_size=49408).eval()
    tokens = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 0], [49406, 2368, 49407, 0, 0, 0, 0, 0]])
    mask = torch.tensor([[True] * 7 + [False], [True] * 3 + [False] * 5])
    with torch.no_grad():
        fine, out_mask = encoder(tokens, mask)
        # open_clip's own forward (it takes the full context: pad with zeros, which causality keeps out)
        padded = torch.nn.functional.pad(tokens, (0, encoder.context_length - 8))
        pooled = TextTransformer.forward(encoder.backbone, padded)  # [N, C]
        # causal attention: what follows a position (more tokens instead of padding) never reaches it
        longer = torch.where(mask, tokens, torch.full_like(tokens, 2368))
        fine_longer, _ = encoder(longer, torch.ones_like(mask))
    assert fine.shape == (2, 8, 64) and torch.equal(out_mask, mask)
    end = torch.tensor([6, 2])
    torch.testing.assert_close(fine[torch.arange(2), end], torch.relu(pooled))
    torch.testing.assert_close(fine[mask], fine_longer[mask])


def test_clip_text_refuses_narrations_longer_than_its_context():
    encoder = build_text_encoder(dict(tiny_text_cfg(), context_length=4), vocab_size=49408)
    with pytest.raises(ValueError, match=r"data\.text\.max_tokens.*model\.text\.context_length=4"):
        encoder(torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool))


BUILDERS = {
    "video": lambda: build_video_encoder(video_cfg("s3d"), 8, 64),
    "audio": lambda: build_audio_encoder(dict(preset("tv_tiny")["audio"]), n_mels=40),
    "text": lambda: build_text_encoder(tiny_text_cfg(), vocab_size=49408),
    "text_hashed": lambda: build_text_encoder(dict(preset("tiny")["text"]), vocab_size=64),
}
INPUTS = {
    "video": lambda: (random_video(2, 8, 64),),
    "audio": lambda: (torch.randn(2, 40, 64), torch.ones(2, 64, dtype=torch.bool)),
    "text": lambda: (torch.randint(0, 49408, (3, 6)), torch.ones(3, 6, dtype=torch.bool)),
    "text_hashed": lambda: (torch.randint(0, 64, (3, 6)), torch.ones(3, 6, dtype=torch.bool)),
}


def outputs(encoder, inputs):
    with torch.no_grad():
        out = encoder(*inputs)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_saved_weights_load_back_with_identical_outputs(tmp_path, name, fmt):
    source = reseeded(BUILDERS[name], 0)
    state = source.pretrained_module().state_dict()
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "safetensors":
        save_file({key: value.contiguous() for key, value in state.items()}, path)
    else:
        torch.save(state, path)
    fresh = reseeded(BUILDERS[name], 1)
    inputs = INPUTS[name]()
    assert not torch.equal(outputs(fresh, inputs), outputs(source, inputs))
    load_encoder_weights(fresh, read_weights(str(path)), str(path))
    assert torch.equal(outputs(fresh, inputs), outputs(source, inputs))


def test_a_shape_mismatch_names_the_key_and_the_file(tmp_path):
    encoder = BUILDERS["text"]()
    state = encoder.pretrained_module().state_dict()
    state["positional_embedding"] = state["positional_embedding"][:16]  # a shorter context
    del state["ln_final.bias"]
    state["visual.proj"] = torch.zeros(2)  # an open_clip checkpoint's image tower: ignored
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "clip.safetensors"
    save_file(state, path)
    with pytest.raises(PretrainedWeightsError) as caught:
        load_encoder_weights(encoder, read_weights(str(path)), f"model.text.weights={path}")
    message = str(caught.value)
    assert f"model.text.weights={path}" in message and "positional_embedding: shape [16, 64]" in message
    assert "missing ln_final.bias" in message and "unexpected extra.weight" in message and "visual.proj" not in message


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(PretrainedWeightsError, match=r"checkpoint\.pt: entry 'state_dict' is a dict"):
        read_weights(str(path))
    with pytest.raises(PretrainedWeightsError, match="no weights file at"):
        read_weights(str(tmp_path / "absent.safetensors"))


def test_model_config_weights_load_into_the_model_from_s3(tmp_path, s3_env):
    """`model.<m>.weights` through build_model + load_pretrained: a local video file and an s3:// text file."""
    cfg = preset("tv_tiny")
    source = reseeded(lambda: build_model(cfg, BPE_DATA), 0)
    video_file = tmp_path / "s3d.safetensors"
    save_file(source.encoders["video"].backbone.state_dict(), video_file)
    text_url = f"{s3_env}/weights/text.pt"
    text_file = tmp_path / "text.pt"
    torch.save(source.encoders["text"].backbone.state_dict(), text_file)
    write_bytes(text_url, text_file.read_bytes())

    cfg = copy.deepcopy(cfg)
    cfg["video"]["weights"], cfg["text"]["weights"] = f"file://{video_file}", text_url
    model = reseeded(lambda: build_model(cfg, BPE_DATA), 1)
    lines = load_pretrained(model, cfg)
    assert len(lines) == 2 and text_url in lines[1]
    for modality, loaded in (("video", True), ("text", True), ("audio", False)):
        expected, got = source.encoders[modality].state_dict(), model.encoders[modality].state_dict()
        same = all(torch.equal(expected[key], got[key]) for key in expected)
        assert same == loaded, modality
