"""The sequence format (paper §3): the vocabulary and the structured serializer
(:mod:`.serialize`), training instances packed per dialog (:mod:`.packing`), and item–ID
alignment instances (:mod:`.align`, beyond the paper)."""
