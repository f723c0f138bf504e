"""Scoring (paper §5, §7): recommenders under the paper's protocols, dialog metrics and result
files (:mod:`.evaluate`), and the baselines scored in the same harness (:mod:`.baselines`)."""
