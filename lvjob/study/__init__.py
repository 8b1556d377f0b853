"""study: the study of SPEC §1 and nothing about where it runs.

Its typed spec and each node's Job settings (`spec`), the stage table (`stages`), its late-bound
choices (`choices`) and the FLOP plan checked against the budget before anything runs (`plan`).
"""
