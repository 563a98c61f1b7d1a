"""Stage-1 loss terms, one module each, and their weighted sum (preprint Eq. 3).

Every term returns a named output (``{"rtcl_loss": ...}``) and is normalised as a mean over
the *global* batch: each rank sums over its own rows and divides by the global count times
``1 / world_size``, so that DDP's gradient averaging yields exactly the gradient of the
single-process loss on the same global batch (open_clip's local-loss with gather-with-grad).
"""

from training.stage1.losses.combined import Stage1Loss
from training.stage1.losses.itcl import ITCLoss
from training.stage1.losses.rtcl import RTCLoss
from training.stage1.losses.scc import SCCLoss

__all__ = ["ITCLoss", "RTCLoss", "SCCLoss", "Stage1Loss"]
