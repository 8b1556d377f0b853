"""run: one job into its run directory, what the cluster starts, preempts and restarts.

The job spec (`job`), run.json and reading a run back (`rundir`), the run directory's lock (`lock`),
the FLOP ledger and what a job costs (`ledger`, `cost`), checkpoints (`checkpoint`), experiment
tracking (`tracking`), provenance (`provenance`), speed and ETA (`throughput`), the training loop
(`train`), the evaluation (`evaluate`), the adapter folder (`adapter`), the runner that ties them
together (`runner`), and the demo model's pre-training (`pretrain`).
"""
