from tests.benchmarks.fixtures import bench_dirs, probe_set, scripted_server  # noqa: F401
