"""The learned localizer of seed 004: a DeepSTORM-like network and a conditional DDPM.

Built so far: the diffusion process and its samplers (:mod:`.diffusion`) and the networks
(:mod:`.networks`). Training, shipped weights and serving are not built yet (issue 14).
"""
