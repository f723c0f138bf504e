"""Experiments built on the layers below: experiment steps and tables (:mod:`.experiments`),
the studies beyond the paper (:mod:`.coldstart`, :mod:`.freemode`, :mod:`.casestudy`,
:mod:`.constraints`), benchmarks (:mod:`.bench`), a step budget from a learning curve
(:mod:`.curve`) and paired claims (:mod:`.claims`)."""
