"""Speed and memory measurements; each prints one JSON object on stdout. Run from the repository root as
modules, in the environment each names: ``python -m benchmarks.<name> --help``; ``python -m benchmarks.report``
runs them all into ``runs/benchmarks/report.{json,md}``. Shared helpers: :mod:`benchmarks.measure`."""
