"""Studies: the preprint's ablations (Table 2, Figures 1-2) as one plan of shared runs.

``spec`` reads and checks a ``study.json``, ``presets`` holds the preprint's arms, ``plan``
turns a study into steps (each identical run once) and commands, ``tower`` is the
``swap-tower`` step of the arm without Stage-2, ``cli`` is ``python -m training study-plan``.
No torch and no Django at import.
"""
