"""trainer.nonfinite (issue 12): a NaN batch in a real 1-rank DeepSpeed engine with the tiny codebook
model. `skip` leaves every parameter, Adam moment, buffer (batch norms, codebook) and the optimizer's
step count exactly as they were and counts the skip; `stop` fails naming the step and the terms."""

from __future__ import annotations

import pytest

from tests.train.test_engine import _result_of, by_value, trainer_cfg  # noqa: F401 (fixture)

RECIPE = {"name": "cmcm", "modalities": ["video", "audio", "text"], "mms_margin": 0.001, "cmcm_alpha": 0.1}


def _run(trainer_cfg: dict, port: int, queue) -> None:
    import os

    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    import deepspeed

    from mmdist.models import build_model
    from mmdist.train.engine import build_engine
    from mmdist.train.loop import NonFiniteSkips, train_step
    from tests.models.conftest import DATA_CFG, make_batch, preset

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = build_model(preset("tiny"), DATA_CFG)
    model.codes.quantizer.defer_updates = True
    engine = build_engine(model, trainer_cfg, micro_batch=6)
    skips = NonFiniteSkips(trainer_cfg["nonfinite"], trainer_cfg["max_consecutive_skips"])

    def snapshot():
        state = {f"param.{n}": p.detach().clone() for n, p in engine.module.named_parameters()}
        state.update({f"buffer.{n}": b.clone() for n, b in engine.module.named_buffers()})
        for i, group_state in enumerate(engine.optimizer.state.values()):
            state.update({f"adam.{i}.{k}": v.clone() for k, v in group_state.items() if torch.is_tensor(v)})
        return state

    out = {}
    assert train_step(engine, make_batch(size=6, seed=1), RECIPE, 0, None, 1.0, skips) is not None
    before = snapshot()
    poisoned = make_batch(size=6, seed=2)
    poisoned["audio"][0, 0, 0] = float("nan")
    try:
        out["poisoned"] = train_step(engine, poisoned, RECIPE, 1, None, 1.0, skips)
    except FloatingPointError as err:
        out["error"] = str(err)
    after = snapshot()
    out["changed"] = sorted(name for name in before if not torch.equal(before[name], after[name]))
    out["skipped"] = skips.total
    out["healthy"] = train_step(engine, make_batch(size=6, seed=3), RECIPE, 1, None, 1.0, skips) is not None
    # the same snapshot does see a healthy step (Adam moments, batch norms, the codebook's EMA)
    out["moved_after"] = sorted(name for name, value in snapshot().items() if not torch.equal(before[name], value))
    queue.put(by_value(out))
    torch.distributed.destroy_process_group()


def _launch(trainer_cfg):
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(trainer_cfg, free_port(), queue))
    process.start()
    return _result_of(process, queue)


@pytest.mark.slow
def test_a_nan_batch_is_skipped_and_changes_nothing_then_stop_names_the_step(trainer_cfg):  # noqa: F811
    trainer_cfg.update(zero_stage=0, precision="fp32", warmup_steps=1, max_steps=10, nonfinite="skip")
    out = _launch(trainer_cfg)
    assert out["poisoned"] is None and out["skipped"] == 1
    assert out["changed"] == []  # parameters, Adam moments, batch-norm and codebook buffers, all as before
    assert out["healthy"]  # the next healthy batch trains as usual, and the snapshot sees it
    assert "buffer.codes.quantizer.embed" in out["moved_after"]
    assert any(name.startswith("adam.") for name in out["moved_after"])

    trainer_cfg["nonfinite"] = "stop"
    out = _launch(trainer_cfg)
    assert "step 1: non-finite loss" in out["error"] and "loss_mms" in out["error"]
    assert "trainer.nonfinite=stop" in out["error"]


def test_consecutive_skips_are_bounded():
    from mmdist.train.loop import NonFiniteSkips

    skips = NonFiniteSkips("skip", max_consecutive=2)
    skips.handle(5, ["loss"])
    skips.ok()
    skips.handle(6, ["loss"])
    skips.handle(7, ["loss"])
    with pytest.raises(FloatingPointError, match="step 8: non-finite loss_cmcm: 3 micro-steps skipped in a row"):
        skips.handle(8, ["loss_cmcm"])
    with pytest.raises(ValueError, match="trainer.nonfinite"):
        NonFiniteSkips("ignore", 1)
