"""The pipeline: a benchmark file becomes specs, a plan of jobs, trained encoders and evaluated rows.

specs (file -> BenchmarkSpec) -> plan (jobs with content keys) -> runner (the job loop) ->
encoders (train, resume, select, replay) / train (the pretraining loop) -> features, sweep (evaluate).
"""
