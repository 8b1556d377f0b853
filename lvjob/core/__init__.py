"""core: what every layer stands on, knowing nothing of the study.

Typed YAML configs and their errors (`config`), atomic writes and JSON-lines records (`atomic`),
where things live: the cache and the layouts of a run directory, a study folder and the results
folder (`paths`), the log line format (`logs`), UTC time stamps (`timestamps`), the process's stop
request from SIGUSR2/SIGTERM (`stops`), a run's heartbeat and when its silence means a hang (`heartbeat`).
"""
