"""mmdist: distributed self-supervised video / audio / text representation learning.

Data flows one way: storage -> decode -> models -> objectives -> train -> eval.
"""

__version__ = "0.1.0"
