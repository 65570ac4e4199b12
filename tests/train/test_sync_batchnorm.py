"""GlobalBatchNorm on 2 gloo processes equals BatchNorm on the concatenated batch in 1 process:
outputs, running statistics and parameter gradients after averaging (the DeepSpeed convention)."""

import os

import torch
import torch.distributed as torch_dist
from torch import nn

from mmdist.train.sync_batchnorm import GlobalBatchNorm, convert_to_global_batchnorm
from tests.conftest import run_ranks



def _make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 2)).double()


def _data():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 8, generator=generator, dtype=torch.float64)


def _loss(net, x):
    return net(x).pow(2).sum() / 8  # a mean over the GLOBAL batch of 8 clips


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    net = convert_to_global_batchnorm(_make_net())
    x = _data().chunk(world)[rank]
    # each rank's loss covers only its own clips; the all-reduce inside the norm makes it global
    loss = _loss(net, x)
    loss.backward()
    grads = {name: param.grad.clone() for name, param in net.named_parameters()}
    for grad in grads.values():  # DeepSpeed/DDP: average gradients over ranks
        torch_dist.all_reduce(grad)
        grad /= world
    # numpy, not tensors: torch shares tensors through files that vanish when the process exits
    queue.put((rank, {k: (v * world).numpy() for k, v in grads.items()}, net[1].running_mean.numpy(), net[1].running_var.numpy()))
    torch_dist.destroy_process_group()


def test_global_batchnorm_matches_single_process_on_concatenated_batch():
    reference = _make_net()
    loss = _loss(reference, _data())
    loss.backward()
    expected = {name: param.grad for name, param in reference.named_parameters()}

    results = run_ranks(_worker, world=2, timeout_s=120)
    for _, grads, running_mean, running_var in results:
        # each rank's loss is its share of the global loss, so the gradient summed over ranks
        # (W x the average each rank holds) must be the single-process gradient
        for name, grad in grads.items():
            torch.testing.assert_close(torch.from_numpy(grad), expected[name], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(torch.from_numpy(running_mean), reference[1].running_mean, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(torch.from_numpy(running_var), reference[1].running_var, rtol=1e-9, atol=1e-12)


def test_conversion_keeps_parameters_and_is_plain_batchnorm_outside_distributed():
    net = _make_net()
    before = net(_data())
    converted = convert_to_global_batchnorm(_make_net())
    assert isinstance(converted[1], GlobalBatchNorm)
    torch.testing.assert_close(converted(_data()), before)
    converted.eval()
    net.eval()
    torch.testing.assert_close(converted(_data()), net(_data()))
