"""run: one job into its run directory, what the cluster starts, preempts and restarts.

The job spec (`job`), the run directory's status and summary (`rundir`), its lock (`lockfile`),
the FLOP ledger and what a job costs (`ledger`, `cost`), checkpoints (`checkpoint`), experiment
tracking (`tracking`), provenance (`provenance`), speed and ETA (`throughput`), the training loop
(`train`), the runner (`runner`), and the demo model's pre-training (`pretrain`).
"""
