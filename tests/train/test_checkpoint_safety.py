"""DeepSpeed checkpoints are read weights-only: resume (mmdist.train.engine.load_checkpoint) and
ZeRO-3 consolidation (mmdist.models.checkpoint.load_model_state) load real checkpoints of ZeRO 0, 1
and 3, and refuse one whose pickle would run code, before it runs.

DeepSpeed 0.19 calls torch.load(weights_only=False) itself; the allow-list must hold exactly what its
files pickle besides tensors, which the test reads from the files (a static scan of their pickles).
"""

from __future__ import annotations

import glob
import os
import shutil

import pytest
import torch

from tests.models.test_checkpoint import WritesMarker
from tests.train.test_engine import _result_of, by_value

pytestmark = pytest.mark.slow
STAGES = (1, 3)  # ZeRO-0 resumes in tests/train/test_fit.py; 1 and 3 write every kind of file DeepSpeed has


def _save_and_resume(trainer_cfg: dict, port: int, root: str, queue) -> None:
    """In a fresh process (DeepSpeed initialises torch.distributed), per ZeRO stage: one step of a small
    model, a checkpoint as the trainer writes it, a resume into a second engine, then a resume from
    the same checkpoint with a code-running object added to its optimizer states file."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    import deepspeed

    from mmdist.models.checkpoint import UnsafeCheckpointError
    from mmdist.train.engine import build_engine, load_checkpoint, save_checkpoint
    from tests.train.test_engine import _loss, _small_model

    deepspeed.init_distributed(dist_backend="gloo")
    results = {}
    for stage in STAGES:
        cfg = dict(trainer_cfg, zero_stage=stage)
        torch.manual_seed(0)
        engine = build_engine(_small_model(), cfg, micro_batch=8)
        engine.backward(_loss(engine.module, 0))
        engine.step()
        client = {"history": [{"step": 1, "loss": 0.5}], "kmeans": {"centroids": torch.ones(2, 3), "queue": [torch.zeros(1, 3)], "fits": 1}}
        checkpoint = save_checkpoint(engine, 1, client, {"model": {}, "trainer": cfg})
        with torch.no_grad(), deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            trained = {name: value.detach().clone() for name, value in engine.module.state_dict().items()}

        torch.manual_seed(1)  # other initial weights: the resume must overwrite them
        resumed = build_engine(_small_model(), cfg, micro_batch=8)
        state = load_checkpoint(resumed, checkpoint)
        with torch.no_grad(), deepspeed.zero.GatheredParameters(list(resumed.module.parameters())):
            same = all(torch.equal(resumed.module.state_dict()[name], value) for name, value in trained.items())

        folder = checkpoint.path
        target = glob.glob(os.path.join(folder, "step_00000001", "*optim_states.pt"))[0]
        files = sorted(glob.glob(os.path.join(folder, "step_00000001", "*.pt")))
        stored = {path: torch.serialization.get_unsafe_globals_in_checkpoint(path) for path in files}
        shutil.copy(target, f"{target}.clean")
        marker = os.path.join(root, f"marker-{stage}")
        torch.save(dict(torch.load(target, weights_only=False), extra=WritesMarker(marker)), target)  # our own file here
        try:
            load_checkpoint(resumed, checkpoint)
            refusal = None
        except UnsafeCheckpointError as err:
            refusal = str(err)
        # plain values only: tensors on a multiprocessing queue live in this process's shared memory
        client_state = {"step": state["step"], "history": state["history"], "centroids": state["kmeans"]["centroids"].tolist()}
        results[stage] = {"client_state": client_state, "same": same, "stored": stored, "refusal": refusal,
                          "target": target, "marker": marker, "marker_written": os.path.exists(marker), "folder": folder}
    queue.put(by_value(results))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    import torch.multiprocessing as mp
    from omegaconf import OmegaConf

    from tests.conftest import CONFIG_DIR, free_port

    trainer_cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml"))
    trainer_cfg.update(precision="fp32", warmup_steps=1, max_steps=2)
    context = mp.get_context("spawn")
    queue = context.Queue()
    root = str(tmp_path_factory.mktemp("resume"))
    process = context.Process(target=_save_and_resume, args=(trainer_cfg, free_port(), root, queue))
    process.start()
    results = _result_of(process, queue, timeout_s=600)
    yield results
    for result in results.values():
        shutil.rmtree(result["folder"], ignore_errors=True)  # save_checkpoint's temporary folders


@pytest.mark.parametrize("stage", STAGES)
def test_resume_reads_weights_only_and_restores_the_run(resumed, stage):
    result = resumed[stage]
    assert result["same"], "the resumed engine's weights differ from the saved ones"
    assert result["client_state"] == {"step": 1, "history": [{"step": 1, "loss": 0.5}], "centroids": [[1.0] * 3] * 2}


def test_the_allow_list_is_what_deepspeed_stores(resumed):
    from mmdist.models.checkpoint import deepspeed_safe_globals

    allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in deepspeed_safe_globals()}
    stored = set().union(*(set(names) for result in resumed.values() for names in result["stored"].values()))
    assert stored == allowed  # nothing missing (resume works) and nothing allowed that DeepSpeed never stores


@pytest.mark.parametrize("stage", STAGES)
def test_a_crafted_checkpoint_is_refused_before_it_runs(resumed, stage):
    result = resumed[stage]
    assert result["refusal"] is not None, "a checkpoint holding os.system was resumed from"
    assert f"{result['target']} holds ['posix.system']" in result["refusal"]
    assert not result["marker_written"]


def test_zero3_consolidation_is_weights_only(resumed):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from mmdist.models.checkpoint import UnsafeCheckpointError, load_model_state

    result = resumed[3]  # its optimizer states hold the crafted object
    with pytest.raises(UnsafeCheckpointError, match=r"optim_states\.pt holds \['posix\.system'\]"):
        load_model_state(result["folder"])
    assert not os.path.exists(result["marker"])

    shutil.copy(f"{result['target']}.clean", result["target"])
    folder = result["folder"]
    state = load_model_state(folder)
    reference = get_fp32_state_dict_from_zero_checkpoint(folder)  # DeepSpeed's own (unrestricted) reading
    assert sorted(state) == sorted(reference) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert all(torch.equal(state[name], reference[name]) for name in reference)
