"""The measurements of one repeat, one module each; each module's `run(bench, plan, dlq)` returns its figures."""
