"""The prepared GPU job: one command that benchmarks, trains and evaluates roca on a CUDA
machine that is lent for about ten minutes and has no network (``scripts/gpu_run.sh``).

Phases (:mod:`.job`): check the environment; render a training set and a held-out set on most
CPU cores while the model benchmark (:mod:`.benchmark`) runs on the GPU; fit the training
preset's schedule to the minutes left (:mod:`.schedule_fit`); train with bf16 autocast;
evaluate the new model and the committed demo model on the held-out rooms; write the model
in parts small enough to come back (:mod:`.file_split`) with the tables and the log.
Sizes live in ``config/gpu_job.yaml`` (:mod:`.config`); ``--dry-run`` runs the same code on
the CPU with tiny sizes, which the test suite does.
"""
