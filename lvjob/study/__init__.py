"""study: the study of SPEC §1 and nothing about where it runs.

Its typed spec (`spec`), the stage table, its late-bound choices (`choices`) and the FLOP plan
checked against the budget before anything runs (`plan`).
"""
