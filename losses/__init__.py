"""Pure torch loss functions of the two papers (no Ray, no I/O); all return per-example tensors."""
from losses.dpo import LOSS_TYPES, dpo_loss
from losses.logps import sequence_logps, token_logps
from losses.macpo import macpo_loss
from losses.wspo import wspo_loss

__all__ = ["LOSS_TYPES", "dpo_loss", "macpo_loss", "sequence_logps", "token_logps", "wspo_loss"]
