"""Decoding (paper §5): the SID prefix tree, its logits processor and the item score
(:mod:`.trie`); the paper's beam (:mod:`.beam_search`) and exact scoring of every item
(:mod:`.item_scores`), both fed by :mod:`.batching`; the response text after an item
(:mod:`.generation`)."""
