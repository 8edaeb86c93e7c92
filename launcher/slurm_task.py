"""`python -m launcher.slurm_task JOB_DIR`, and `SlurmTask`, under the names users already have.

sbatch scripts written by `launch sbatch` run this module by name, and the submitit pickles of
sweeps submitted before the code moved name `launcher.slurm_task.SlurmTask`: a requeued task
unpickles them long after. launcher/slurm/task.py is the code.
"""

import sys

from launcher.slurm.task import SlurmTask, main

__all__ = ["SlurmTask", "main"]

if __name__ == "__main__":
    sys.exit(main())
