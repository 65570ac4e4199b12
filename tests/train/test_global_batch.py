"""The whole training step on 2 gloo processes x b clips equals 1 process x 2b clips (SPEC Sec. 6):
the tiny model with its batch norms made global, the gather of every output, the mc3_vq recipe loss,
and the parameter gradients after DeepSpeed-style averaging. The model runs in float64; the quantiser
computes in float32 by design (SPEC 8.8), so the codebook path agrees to float32 precision."""

import os

import torch
import torch.distributed as torch_dist

from mmdist.models import build_model
from mmdist.objectives import recipe_loss, with_code_probs
from mmdist.train.gather import gather_outputs
from mmdist.train.sync_batchnorm import convert_to_global_batchnorm
from tests.conftest import run_ranks
from tests.models.conftest import DATA_CFG, make_batch, preset

RECIPE = {
    "name": "mc3_vq",
    "modalities": ["video", "audio", "text"],
    "temperature": 0.07,
    "anchor": "audio",
    "consensus_alphas": {"video": 0.5, "text": 1.0},
    "consensus_weight": 1.0,
    "align_steps": 0,  # refine: every term of mc3_vq contributes
    "consensus_inverse": "unscaled",
    "refine_contrastive": True,
    "cmcm_alpha": 0.1,
}



def _model():
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg["codebook"]["num_codes"] = 32
    return convert_to_global_batchnorm(build_model(cfg, DATA_CFG)).double().train()


def _batch():
    batch = make_batch(size=8, seed=3)  # with missing modalities and padding
    return {key: value.double() if value.is_floating_point() else value for key, value in batch.items()}


def _step(model, batch):
    loss, _ = recipe_loss(RECIPE, gather_outputs(with_code_probs(model(batch))), step=0)
    loss.backward()
    return float(loss), {name: param.grad.detach().clone() for name, param in model.named_parameters() if param.grad is not None}


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = _model()
    batch = {key: value.chunk(world)[rank] for key, value in _batch().items()}
    loss, grads = _step(model, batch)
    for grad in grads.values():  # what DeepSpeed does with the gradients: average over ranks
        torch_dist.all_reduce(grad)
        grad /= world
    codebook = model.codes.quantizer.codebook.detach()
    queue.put((rank, loss, {name: grad.numpy() for name, grad in grads.items()}, codebook.numpy()))
    torch_dist.destroy_process_group()


def test_two_processes_give_the_single_process_loss_and_gradients():
    torch.set_num_threads(1)
    reference = _model()
    expected_loss, expected_grads = _step(reference, _batch())
    expected_codebook = reference.codes.quantizer.codebook.detach()

    results = run_ranks(_worker, world=2, timeout_s=300)
    # a term computed from local rows (the commitment) differs per rank; the ranks' mean is the global loss
    mean_loss = sum(loss for _, loss, _, _ in results) / len(results)
    assert abs(mean_loss - expected_loss) < 1e-6 * abs(expected_loss)
    for _, _, grads, codebook in results:
        assert set(grads) == set(expected_grads)
        for name, grad in grads.items():
            grad = torch.from_numpy(grad)
            if name.startswith("codes.project.") and name.endswith(".bias"):
                # a shift before the affine-free batch norm changes nothing: 0 in theory, both sides
                # hold float32 rounding noise of the quantiser path
                assert grad.abs().max() < 1e-5 and expected_grads[name].abs().max() < 1e-5, name
                continue
            # relative error of the whole tensor: float32 codebook arithmetic leaves ~1e-7, a gather
            # that lost the cross-rank gradient sum would leave 0.5
            error = torch.linalg.vector_norm(grad - expected_grads[name])
            assert error <= 1e-5 * torch.linalg.vector_norm(expected_grads[name]) + 1e-9, (name, float(error))
        torch.testing.assert_close(torch.from_numpy(codebook), expected_codebook, rtol=1e-6, atol=1e-7)
