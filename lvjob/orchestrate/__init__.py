"""orchestrate: the study on an executor.

Submission in waves with the budget gate (`submission`), the whole study in one allocation
(`pack`), the retry gates' policy and records (`retries`), the pre-flight (`preflight`),
`lvjob status` (`status`) and `lvjob pull` (`pull`).
"""
