"""A video prior of the robot's own world, made where nothing pretrained can be downloaded.

`corpus` records action-free MetaWorld video (`python -m pipeline.prior.corpus`), `fit_vae` fits and
registers the Wan VAE on it (`python -m pipeline.prior.fit_vae`), `pretrain` trains the Wan DiT on the
video objective under Ray Train and registers it (`python -m pipeline.prior.pretrain`, `worker` is the loop
each rank runs, `pictures` draws predicted futures), `chain` runs the three for `pipeline.run`, `config`
holds `corpus.*`, `vae_fit.*` and `pretrain.*`.
"""
