"""The learner: the whole training device behind one command stream (core.Learner), and its blocks,
each checked against a golden primitive: lfsr (leap-forward noise generator), factors (direction
factors), perturb (perturbed weight read), lif (neuron update lanes), loss, update (step unit and
weight-update lanes), fixed (rounding and saturation). docs/rtl.md describes them."""
from .core import Learner

__all__ = ["Learner"]
