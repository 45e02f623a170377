"""What the tests and the benchmarks share: test pages, the services as processes, faults."""
