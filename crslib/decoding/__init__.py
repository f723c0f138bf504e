"""Decoding (paper §5): the SID prefix tree and its constrained beam (:mod:`.trie`), and the
response text after it (:mod:`.generation`)."""
