"""Pure torch loss functions of the two papers (no Ray, no I/O); all return per-example tensors.

Names are resolved on first use (PEP 562): config validation reads `LOSS_TYPES` (losses.names)
without importing torch."""
from importlib import import_module

from losses.names import LOSS_TYPES

__all__ = ["LOSS_TYPES", "dpo_loss", "macpo_loss", "sequence_logps", "token_logps", "wspo_loss"]

_HOMES = {"dpo_loss": "losses.dpo", "macpo_loss": "losses.macpo", "sequence_logps": "losses.logps",
          "token_logps": "losses.logps", "wspo_loss": "losses.wspo"}


def __getattr__(name):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(name)
