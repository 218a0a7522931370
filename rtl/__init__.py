"""rfsnn gateware (Amaranth): the learner (learner.py) and its blocks. docs/rtl.md describes them."""
