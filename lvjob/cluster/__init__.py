"""cluster: where jobs run, knowing nothing of studies.

The profile (`profile`: executor, resources, image, paths), the SLURM client (`slurm`: the only
code that runs squeue, sacct, scontrol or scancel, and every job state), the executors behind one
`Backend` protocol (`executors`: local, SLURM), and the supervisor that runs the runner as a child
and hands it the cluster's signals (`supervise`).
"""
