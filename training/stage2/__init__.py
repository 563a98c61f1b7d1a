"""Stage-2 of FGAM (preprint §3.3): the rectification module, SFT on correction trajectories,
RL with the RM as reward, and the iterative rectification loop. No Django here.
"""
