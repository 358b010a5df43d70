"""The stages of the workflow: run loading, train, probe, relabel, retrain, the clean/demo pipeline and
reproduce. Each stage is a function with a dataclass config; the CLI calls exactly one."""
