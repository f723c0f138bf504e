"""Scoring (paper §5, §7): the recommendation protocols (:mod:`.evaluate`), the recommenders
scored in one harness (:mod:`.recommenders`; the baselines: :mod:`.baselines`), the dialog
metrics and generated responses (:mod:`.dialog_eval`), and result files tied to the weights
that made them (:mod:`.result_files`)."""
