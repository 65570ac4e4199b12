"""DeepSpeed config building: what the trainer config declares reaches DeepSpeed; bad keys fail by name."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmdist.train.engine import deepspeed_config, micro_batch_size
from mmdist.config import redact


@pytest.fixture()
def trainer_cfg():
    return OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "configs/trainer/default.yaml"))


def test_micro_batch_is_global_batch_over_workers_and_accumulation():
    assert micro_batch_size(32, 2, 2) == 8
    with pytest.raises(ValueError, match="data.batch_size=30"):
        micro_batch_size(30, 4, 1)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage_and_precision_reach_deepspeed(trainer_cfg, stage):
    trainer_cfg.update(zero_stage=stage, precision="bf16", grad_accum_steps=2)
    config = deepspeed_config(trainer_cfg, micro_batch=4)
    assert config["zero_optimization"]["stage"] == stage
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "bf16" not in config  # bf16 params would cast the fp32 codebook (SPEC 8.8)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["scheduler"]["params"]["warmup_num_steps"] == trainer_cfg["warmup_steps"]


def test_fp32_has_no_autocast(trainer_cfg):
    assert "torch_autocast" not in deepspeed_config(trainer_cfg, micro_batch=2)


@pytest.mark.parametrize(("key", "value"), [("zero_stage", 4), ("precision", "fp16"), ("warmup_steps", 0)])
def test_bad_trainer_values_name_the_key(trainer_cfg, key, value):
    trainer_cfg[key] = value
    with pytest.raises(ValueError, match=f"trainer.{key}"):
        deepspeed_config(trainer_cfg, micro_batch=2)


def test_secrets_are_redacted_from_the_written_config():
    config = {
        "storage": {"endpoint_url": "http://127.0.0.1:9000", "aws_secret_access_key": "abc"},
        "token": "t",
        "data": {"text": {"max_tokens": 16}},  # a count of tokens, not a secret
    }
    assert redact(config) == {
        "storage": {"endpoint_url": "http://127.0.0.1:9000", "aws_secret_access_key": "***"},
        "token": "***",
        "data": {"text": {"max_tokens": 16}},
    }


def _clipping_run(trainer_cfg: dict, port: int, queue) -> None:
    """In a fresh process (DeepSpeed initialises torch.distributed): 3 steps of a small model in a
    1-rank ZeRO-0 engine through mmdist.train.loop.optimizer_step; puts (norms, lrs, parameters)."""
    import os

    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    import deepspeed

    from mmdist.train.engine import build_engine
    from mmdist.train.loop import optimizer_step

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    engine = build_engine(_small_model(), trainer_cfg, micro_batch=8)
    norms, lrs = [], []
    for step in range(3):
        lrs.append(engine.get_lr()[0])
        engine.backward(_loss(engine.module, step))
        norms.append(optimizer_step(engine, trainer_cfg["grad_clip"]))
    queue.put(by_value((norms, lrs, {name: param.detach().clone() for name, param in engine.module.named_parameters()})))
    torch.distributed.destroy_process_group()


def by_value(result) -> bytes:
    """Plain pickle copies tensors' data; a multiprocessing queue's pickler would share them through the
    sender's fd listener, which is gone once the sender has exited (FileNotFoundError under load)."""
    import pickle

    return pickle.dumps(result)


def _result_of(process, queue, timeout_s: float = 300):
    """What `process` puts on `queue`; fails as soon as the process dies without putting it."""
    import pickle
    import queue as queues
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = pickle.loads(queue.get(timeout=1))
        except queues.Empty:
            assert process.is_alive(), f"the DeepSpeed process exited with {process.exitcode} (its traceback is above)"
            continue
        process.join(timeout=60)
        return result
    raise TimeoutError(f"no result from the DeepSpeed process in {timeout_s} s")


def _small_model():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _loss(model, step: int):
    import torch

    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(8, 6, generator=generator) * (1 + 3 * step)  # gradient norms differ from step to step
    return model(inputs).pow(2).mean()


def test_zero0_step_clips_like_torch_and_reports_the_norm_before_clipping(trainer_cfg):
    """Against a plain torch loop: AdamW with the same parameter groups and learning rates, clipped by
    torch.nn.utils.clip_grad_norm_. Adam's later updates depend on how much each step was clipped, so
    an unclipped or differently clipped run ends elsewhere."""
    import torch
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    trainer_cfg.update(zero_stage=0, precision="fp32", grad_clip=0.5, warmup_steps=1, max_steps=3)
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_clipping_run, args=(trainer_cfg, free_port(), queue))
    process.start()
    norms, lrs, trained = _result_of(process, queue)

    def reference(clip: bool):
        torch.manual_seed(0)
        model = _small_model()
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": trainer_cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=trainer_cfg["lr"], betas=tuple(trainer_cfg["betas"]),
        )
        expected_norms = []
        for step in range(3):
            for group in optimizer.param_groups:
                group["lr"] = lrs[step]
            optimizer.zero_grad()
            _loss(model, step).backward()
            expected_norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])))
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), trainer_cfg["grad_clip"])
            optimizer.step()
        return expected_norms, dict(model.named_parameters())

    expected_norms, clipped = reference(clip=True)
    assert norms == pytest.approx(expected_norms, rel=1e-5)
    assert min(expected_norms) > trainer_cfg["grad_clip"]  # every step was clipped
    for name, param in clipped.items():
        torch.testing.assert_close(trained[name], param.detach(), rtol=1e-5, atol=1e-6)
    _, unclipped = reference(clip=False)
    assert any(not torch.allclose(trained[name], param.detach(), atol=1e-4) for name, param in unclipped.items())


class _CodesModel:
    """A linear layer feeding a deferred VectorQuantizer: the shape `optimizer_step` looks for
    (`module.codes.quantizer`)."""

    @staticmethod
    def build():
        import torch

        from mmdist.vq import VectorQuantizer

        class Codes(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.quantizer = VectorQuantizer(8, 3, dead_after=1, seed=0)
                self.quantizer.defer_updates = True

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.project = torch.nn.Linear(6, 3)
                self.codes = Codes()

            def forward(self, x):
                return self.codes.quantizer(self.project(x)).quantized.pow(2).mean()

        return Model()


def _accumulation_run(trainer_cfg: dict, port: int, queue) -> None:
    """Fresh process, 1-rank ZeRO-0 engine, 2 optimizer steps of 2 micro-steps each through
    optimizer_step; puts (codebook updates after each micro-step, the inputs each micro-step saw,
    the projections' weights before each step, the final codebook)."""
    import os

    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    import deepspeed

    from mmdist.train.engine import build_engine
    from mmdist.train.loop import optimizer_step

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    engine = build_engine(_CodesModel.build(), trainer_cfg, micro_batch=4)
    quantizer = engine.module.codes.quantizer
    updates, projected = [], []
    for micro in range(4):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(micro))
        projected.append(engine.module.project(x).detach().clone())
        engine.backward(engine(x))
        optimizer_step(engine, trainer_cfg["grad_clip"])
        updates.append(int(quantizer.num_updates))
    queue.put(by_value((updates, projected, quantizer.codebook.clone())))
    torch.distributed.destroy_process_group()


def test_codebook_moves_once_per_optimizer_step_under_gradient_accumulation(trainer_cfg):
    """Issue 9, deviation 8: with grad_accum_steps = 2 the EMA step, idle counter and resets happen at
    the accumulation boundary, on both micro-batches' rows: the same as one ordinary (non-deferred)
    update per optimizer step on the concatenated rows."""
    import torch
    import torch.multiprocessing as mp

    from mmdist.vq import VectorQuantizer
    from tests.conftest import free_port

    trainer_cfg.update(zero_stage=0, precision="fp32", grad_accum_steps=2, warmup_steps=1, max_steps=2)
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_accumulation_run, args=(trainer_cfg, free_port(), queue))
    process.start()
    updates, projected, codebook = _result_of(process, queue)
    assert updates == [0, 1, 1, 2]
    reference = VectorQuantizer(8, 3, dead_after=1, seed=0)
    for step in range(2):
        reference(torch.cat(projected[2 * step : 2 * step + 2]))
    torch.testing.assert_close(codebook, reference.codebook, rtol=1e-6, atol=1e-6)
