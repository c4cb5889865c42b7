"""The command layer: config schemas, jobs and reports, on top of the library."""
