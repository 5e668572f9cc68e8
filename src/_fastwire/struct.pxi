# The struct core is being written; this placeholder keeps the module building.
