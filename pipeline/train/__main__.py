"""`python -m pipeline.train [overrides]`: Ray Train DDP co-training from the offline cache.

The run name defaults to a hash of the config, so re-running the same config
continues its run (from its last checkpoint) and any override starts a new one.
The cache is built first if it does not exist yet.
"""

from pipeline.train.driver import main

if __name__ == "__main__":
    main()
