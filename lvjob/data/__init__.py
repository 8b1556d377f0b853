"""data: the series and their text, pure functions of arrays and strings, no torch model in sight.

The ODE and how the study's systems are drawn and integrated (`ode`), the HDF5 files with every
check and the seeded splits (`dataset`, whose API this package re-exports: `data.load`,
`data.split_systems`, ...), the LLMTIME text format (`llmtime`) and its grammar (`grammar`), the
prompts (`prompts`), the Qwen tokenizer's view of the text (`tokenizer`) and the training corpus of
token windows (`corpus`).
"""

from lvjob.data.dataset import (MIN_POINTS, MIN_SYSTEMS, SPLITS, VARIABLES, DataError, DataSpec, LVData, Split,
                                context_points, ensure, generate, load, split_counts, split_systems, split_time,
                                write)
from lvjob.data.ode import (EQUILIBRIUM_EXCLUSION, INITIAL_RANGE, PARAM_NAMES, PARAM_RANGE, T_END, draw_params,
                            equilibrium, integrate)
