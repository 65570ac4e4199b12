"""Resuming across a different world size (issue 12, item 3), with real DeepSpeed engines over gloo.

A ZeRO 1, 2 and 3 checkpoint written by 2 ranks is resumed by 1 rank, and the 1-rank checkpoint then
by 2 ranks (users lose and regain nodes on autoscaling clusters). DeepSpeed 0.19 refuses that load
itself; mmdist.train.engine.read_for_another_world consolidates the fp32 weights instead and keeps the
LR schedule and client state, the optimizer state restarting. The ranks are processes of this test
(torch.multiprocessing, spawn), each rank's checkpoint folder merged into one as Ray Train merges them.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.train.test_engine import _result_of, by_value

pytestmark = pytest.mark.slow
STAGES = (1, 2, 3)
STEPS = 3  # optimizer steps before each checkpoint: the LR schedule has moved off its start


def _rank(rank: int, world: int, port: int, trainer_cfg: dict, resume: dict | None, queue) -> None:
    """One rank: per ZeRO stage, resume from `resume[stage]` (a merged checkpoint folder of another world
    size) when given, else start fresh; then STEPS steps and a checkpoint. Rank 0 puts what it saw."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    import deepspeed
    import pyarrow.fs as pafs
    import torch
    from ray.train import Checkpoint

    from mmdist.models.checkpoint import require_complete
    from mmdist.train.engine import build_engine, load_checkpoint, read_for_another_world, restore_engine_state, save_checkpoint
    from tests.train.test_engine import _loss, _small_model

    deepspeed.init_distributed(dist_backend="gloo")
    results = {}
    for stage in STAGES:
        cfg = dict(trainer_cfg, zero_stage=stage)
        result = {}
        torch.manual_seed(1)  # initial weights other than the checkpoint's: a resume must overwrite them
        if resume is None:
            engine, step, history = build_engine(_small_model(), cfg, micro_batch=8 // world), 0, []
        else:
            checkpoint = Checkpoint.from_directory(resume[stage])
            result["saved"] = require_complete(pafs.LocalFileSystem(), resume[stage], resume[stage])
            try:  # what DeepSpeed does by itself
                load_checkpoint(build_engine(_small_model(), cfg, micro_batch=8 // world), checkpoint)
                result["deepspeed"] = None
            except Exception as err:
                result["deepspeed"] = f"{type(err).__name__}: {err}"
            weights, saved = read_for_another_world(checkpoint)
            model = _small_model()
            model.load_state_dict(weights)
            engine = build_engine(model, cfg, micro_batch=8 // world)
            state = restore_engine_state(engine, saved)
            step, history = state["step"], state["history"]
            result.update(resumed_lr=engine.get_lr()[0], global_steps=engine.global_steps, history=history)
            with torch.no_grad(), deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
                result["resumed"] = {name: value.tolist() for name, value in engine.module.state_dict().items()}
        for _ in range(STEPS):
            loss = _loss(engine.module, step)  # every rank the same 8 rows: the same gradient at any world size
            engine.backward(loss)
            engine.step()
            step += 1
            history.append({"step": step, "loss": float(loss)})
        with torch.no_grad(), deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            result["trained"] = {name: value.tolist() for name, value in engine.module.state_dict().items()}
        result["lr"] = engine.get_lr()[0]
        result["folder"] = save_checkpoint(engine, step, {"history": history, "kmeans": None}, {"model": {}, "trainer": cfg}).path
        results[stage] = result
    queue.put(by_value((rank, results)))
    torch.distributed.destroy_process_group()


def _world(world: int, trainer_cfg: dict, resume: dict | None, root: str) -> dict:
    """Run `world` ranks; returns rank 0's results, each stage's checkpoint merged into one folder under `root`."""
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    context = mp.get_context("spawn")
    queue, port = context.Queue(), free_port()
    processes = [context.Process(target=_rank, args=(rank, world, port, trainer_cfg, resume, queue)) for rank in range(world)]
    for process in processes:
        process.start()
    by_rank = dict(_result_of(process, queue, timeout_s=600) for process in processes)
    for process in processes:
        process.join(timeout=60)
    for stage in STAGES:
        merged = os.path.join(root, f"world{world}-zero{stage}")
        for results in by_rank.values():  # what Ray Train does with every rank's reported folder
            shutil.copytree(results[stage]["folder"], merged, dirs_exist_ok=True)
            shutil.rmtree(results[stage]["folder"])
        by_rank[0][stage]["folder"] = merged
    return by_rank[0]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """2 ranks -> a checkpoint -> 1 rank resumes it -> a checkpoint -> 2 ranks resume that one."""
    from omegaconf import OmegaConf

    from tests.conftest import CONFIG_DIR

    trainer_cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml"))
    trainer_cfg.update(precision="fp32", warmup_steps=2, max_steps=4 * STEPS, grad_clip=0.0)
    root = str(tmp_path_factory.mktemp("worlds"))
    two = _world(2, trainer_cfg, None, root)
    one = _world(1, trainer_cfg, {stage: two[stage]["folder"] for stage in STAGES}, root)
    back = _world(2, trainer_cfg, {stage: one[stage]["folder"] for stage in STAGES}, root)
    return {"two": two, "one": one, "back": back}


def test_deepspeed_alone_refuses_another_world_size(worlds):
    """What DeepSpeed 0.19.8 does when the world size changes (why mmdist consolidates): ZeRO 1-3 refuse."""
    for stage in STAGES:
        for resumed in (worlds["one"], worlds["back"]):
            error = resumed[stage]["deepspeed"]
            assert error is not None, f"ZeRO-{stage}: DeepSpeed loaded a checkpoint of another world size"
            assert "new world size is not currently supported" in error, error


@pytest.mark.parametrize("stage", STAGES)
def test_another_world_size_resumes_weights_schedule_and_step(worlds, stage):
    for before, after, size in ((worlds["two"], worlds["one"], 2), (worlds["one"], worlds["back"], 1)):
        resumed, written = after[stage], before[stage]
        assert resumed["saved"]["world_size"] == size and resumed["saved"]["zero_stage"] == stage
        assert resumed["resumed"] == written["trained"]  # every weight, exactly (fp32 master weights)
        assert resumed["resumed_lr"] == written["lr"] and resumed["global_steps"] == STEPS * (1 + (size == 1))
        assert [entry["step"] for entry in resumed["history"]] == list(range(1, len(resumed["history"]) + 1))
        assert resumed["lr"] != written["lr"]  # and the schedule goes on from there
    assert [entry["step"] for entry in worlds["back"][stage]["history"]] == list(range(1, 3 * STEPS + 1))
