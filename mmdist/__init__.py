"""mmdist: distributed self-supervised video / audio / text representation learning.

Data flows one way: storage -> decode -> models -> objectives -> train -> eval.
`mmdist.load_model(path).embed(...)` uses a trained model (mmdist/inference.py).
"""

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str):
    # imported on first use: `import mmdist` stays cheap for processes that never load a model
    # (decode workers, the drop-counting actor)
    if name == "load_model":
        from mmdist.inference import load_model

        return load_model
    raise AttributeError(f"module 'mmdist' has no attribute {name!r}")
