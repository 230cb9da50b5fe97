"""Load benchmarks of identity: building blocks, ceilings and real endpoints, driven by wrk."""
