"""The learner: the whole training device behind one command stream (core.Learner), wired from frontend
(command decoder, registers, counters, responses), walker (canonical parameter order), sequencer
(INFER and TRAIN_STEP: passes, steps, the update pass), forward (one forward pass and its loss), draw
(TRAIN_STEPS' batch drawer, with a training set) and memories (the memory map and its RAMs), and built
from blocks each checked against a golden primitive:
lfsr (leap-forward noise generator), factors (direction factors), perturb (perturbed weight read), lif
(neuron update lanes), loss, update (step unit and weight-update lanes), fixed (rounding and
saturation). docs/rtl.md describes them."""
from .core import Learner

__all__ = ["Learner"]
