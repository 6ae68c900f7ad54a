"""Launchers: one command from a run config to a running (multi-host) training job.

``launch.local`` (N processes on this machine), ``launch.multinode`` (plain hosts, optionally over ssh),
``launch.slurm`` (an sbatch script) and ``launch.tpu`` (Cloud TPU VMs through gcloud) all start the same
``python -m xlmp_jax.train`` command and preflight the config first (``launch.preflight``).
"""
