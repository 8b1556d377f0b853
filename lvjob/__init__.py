"""lvjob: the LLMTIME Lotka-Volterra study as batch jobs that survive the cluster."""

__version__ = "0.1.0"
