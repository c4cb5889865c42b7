"""The command layer: config schemas, the run and tune jobs, the run report."""
