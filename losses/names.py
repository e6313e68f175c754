"""The preference-loss variants a config may name (torch-free, so validation stays light)."""

LOSS_TYPES = ("sigmoid", "ipo", "hinge")
