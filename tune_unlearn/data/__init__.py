"""The data layer: which data sets exist (datasets.py, no torch), how each is read
(loaders.py), the forget rules (forget_rules.py), subsets and their batches (parts.py), an
experiment's data on the device, split (load.py), and the experiment files themselves
(experiment.py, no torch). Import from the modules: this face loads nothing, so that the
command line can read experiments before torch loads."""
