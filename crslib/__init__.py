"""crslib: the runnable companion of "Generative Conversational Recommender System" (GCRS).

One module per paper concept: ``data`` (dialogs and catalogs), ``semantic_ids`` and
``quantize`` (item SIDs), ``serialize`` (the structured target format), ``trie`` (constrained
decoding), ``metrics``; see the README's table for the rest.
"""
__version__ = "0.1.0"
