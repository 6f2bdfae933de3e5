"""Command-line tools beside the library: benchmarks, profiles, the GPU check and the 1-NN baseline."""
