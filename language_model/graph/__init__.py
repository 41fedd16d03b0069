"""The decoding graph: lexicon, symbol tables, TLG = T o min(det(L o G)), and the 20-word toy LM."""
