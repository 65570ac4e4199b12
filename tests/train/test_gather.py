"""gather_outputs refuses the model's raw code outputs: the codebook is the same on every rank."""

import pytest
import torch

from mmdist.objectives import with_code_probs
from mmdist.train.gather import gather_outputs


def test_raw_code_outputs_are_refused_and_code_probs_pass():
    outputs = {"code_features": {"audio": torch.rand(2, 3, 4)}, "codebook": torch.rand(5, 4),
               "code_mask": {"audio": torch.ones(2, 3, dtype=torch.bool)}}
    with pytest.raises(ValueError, match="with_code_probs"):
        gather_outputs(outputs)
    gathered = gather_outputs(with_code_probs(outputs))  # one process: the gather is the identity
    assert gathered["code_probs"]["audio"].shape == (2, 5)
