"""core: what every layer stands on, knowing nothing of the study.

Typed YAML configs and their errors (`config`), atomic writes and JSON-lines records (`atomic`),
where things live: the cache and the layouts of a run directory, a study folder and the results
folder (`paths`), the log line format (`logs`), UTC time stamps (`timestamps`).
"""
