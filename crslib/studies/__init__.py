"""Experiments built on the layers below: experiment steps (train or reuse, score or reuse:
:mod:`.experiments`), tables from saved results (:mod:`.result_tables`), the run inventory
(:mod:`.run_inventory`), the chat's settings chosen on validation (:mod:`.chat_choice`), the
studies beyond the paper (:mod:`.coldstart`, :mod:`.freemode`, :mod:`.casestudy`,
:mod:`.constraints`), benchmarks (:mod:`.bench`), a step budget from a learning curve
(:mod:`.curve`) and paired claims (:mod:`.claims`)."""
