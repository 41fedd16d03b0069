"""Decoding: CTC WFST search, lattice n-best, augmentation, n-gram and causal-LM rescoring (one
hypothesis type, stages in :mod:`language_model.decoding.decode`)."""
