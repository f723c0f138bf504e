"""Models and training (paper §4): the backbone with new rows and LoRA (:mod:`.model`), the
one training loop (:mod:`.train`), and a run folder per config (:mod:`.runbase`, :mod:`.run`,
the decoupled baseline :mod:`.decoupled`)."""
