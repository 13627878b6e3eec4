"""`make bench-gpu` (python -m bench.gpu): a hand-tuned bf16 Trainer vs this job on a
bert-base shape, then the job's train, check and predict commands end to end, in one
call under 8 minutes; `--dry-run` does the same on CPU with a tiny model. See
bench/README.md, section GPU."""
