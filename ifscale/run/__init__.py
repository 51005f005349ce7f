"""Running an experiment: the config composed and checked across its parts (`compose`), the
data and model prepared (`context`), the stages (`stages`), and the pipeline that runs one
(`pipeline.run`). The Hydra entry point `experiments/run.py` only builds a `RunConfig` and
calls `ifscale.run.pipeline.run`."""
