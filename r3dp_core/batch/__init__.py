"""``r3dp batch``: many clips from a job list, in one process or on a Ray cluster (see README, Batch rendering)."""
