"""Reading what runs left behind: one loader from a checkpoint, run folder or state_dict to config, task, model and
layers (:mod:`probe.analysis.load`), and the `probe analyze` report (:mod:`probe.analysis.report`)."""
