"""n-gram estimation: corpus normalisation, counts, Katz and Kneser-Ney smoothing, pruning, ARPA I/O, the
wordfreq unigram."""
