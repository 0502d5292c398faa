"""Sweeps: the spec and its expansion (:mod:`probe.sweep.spec`), running the runs locally or through submitit
(:mod:`probe.sweep.execute`), and the summary table (:mod:`probe.sweep.summary`)."""
