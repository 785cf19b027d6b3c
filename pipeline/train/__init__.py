"""Training: Ray Train DDP of Light-WAM on the offline cache, tracked in MLflow.

`driver` owns the MLflow run and the Ray Train trainer, `worker` the loop each
rank runs, `step` one optimisation step, `data` the batches, `state` and
`resume` the checkpoints, `progress` the driver's progress bar, `allocator` the
workers' malloc.
"""

from pipeline.train.driver import (
    FINGERPRINT_TAG,
    RUN_NAME_TAG,
    TrainResult,
    run_name,
    train,
)

__all__ = ["FINGERPRINT_TAG", "RUN_NAME_TAG", "TrainResult", "run_name", "train"]
