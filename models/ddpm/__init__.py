"""The learned localizer of seed 004: a DeepSTORM-like network and a conditional DDPM.

Built so far: the diffusion process and its samplers (:mod:`.diffusion`), the networks
(:mod:`.networks`), the read-out of emitters (:mod:`.emitters`), the training loops
(:mod:`.train`) and inference with its weight files (:mod:`.localizer`). No model is
trained or shipped yet, and nothing serves it (issue 14).
"""
