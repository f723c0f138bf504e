"""Semantic IDs (paper §2): item text -> embedding (:mod:`.encode`) -> residual codes
(:mod:`.quantize`, collisions re-assigned) -> the SID map a run uses (:mod:`.semantic_ids`)."""
