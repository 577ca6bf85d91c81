"""The learned localizer of seed 004: a DeepSTORM-like network and a conditional DDPM.

Built so far: the diffusion process and its samplers (:mod:`.diffusion`), the networks
(:mod:`.networks`) and the read-out of emitters (:mod:`.emitters`). Training, shipped
weights and serving are not built yet (issue 14).
"""
