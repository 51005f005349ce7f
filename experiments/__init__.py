"""The command line of the experiments (Hydra), outside the library: `run` (one cell of an
experiment), `merge`, `report`, `bench`, ... Installed with ifscale (`make setup`), so every
script imports its siblings as `experiments.<module>` and Hydra's launchers find them in the
jobs they start; run them as files (`python experiments/run.py ...`) or modules
(`python -m experiments.run ...`)."""
