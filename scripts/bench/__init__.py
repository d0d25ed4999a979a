"""The pieces of `scripts/benchmark.py`: peer definitions and subprocesses (`peers`), the work done
in child processes (`workers`), the FLOP count read from the policy family (`flops`) and the
Markdown, JSON and plots (`report`)."""
