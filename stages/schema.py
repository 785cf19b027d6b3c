"""The sample schema: what a shard holds and what the cache loader yields, in one place.

A shard sample is a set of `.npy` members (`SHARD_ARRAYS`, plus
`current_frame` in caches built with `cache.current_frames`) and a `.json`
meta (episode, frame, task, text key). The loader turns it into the tensors
the model's batch contract names (`model.light_wam`): `BATCH_KEYS`, plus
`current_pixels` where the cache has frames. Actions and proprio stay in the
robot's units here; training normalizes them with the manifest's stats.
"""

SHARD_ARRAYS = ("video_latents", "video_frame_mask", "current_latent", "proprio", "actions", "action_mask")
OPTIONAL_SHARD_ARRAYS = ("current_frame",)  # uint8 [H, W, 3], written when the group has them

BATCH_KEYS = ("video_latents", "video_frame_mask", "current_latent", "proprio", "actions", "action_mask",
              "text", "text_mask")
OPTIONAL_BATCH_KEYS = ("current_pixels",)  # [3, 1, H, W] in [-1, 1], from `current_frame`
