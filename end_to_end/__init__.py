"""The main job end to end: synthetic data -> LM build -> training -> Redis + LM server -> evaluation
-> one table of PER/WER, the submission CSV and Figure 2, with every child process supervised."""
