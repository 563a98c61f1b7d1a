"""Stage-1: fine-grained cross-modal pre-training (preprint §3.2): ITCL + RTCL + SCC."""
