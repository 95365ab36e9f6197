"""The project's own tests, grouped by the part they test; each group has its own conftest.

    tests/sim/          the simulated cluster: API server, scheduler and allocator, CEL, kubelets
    tests/driver/       the reference driver
    tests/conformance/  the suite itself: inputs, providers, report, that it catches broken drivers
    tests/static/       files checked as they are: docs, chart, image, kind configs, workflows, the wheel
    tests/support/      what tests share and never collected as tests: builders, doubles (fake plugin,
                        recording stand-ins for docker/kind/helm, broken drivers in support/mutants)
    tests/localkube/    the local control plane (localkube/): builds, versions, start-up
    tests/local/        the suite on a real control plane (make test-local; skipped in make test)
    tests/fixtures/, tests/profiles/   data

``tests`` is a package imported from the repository root (``from tests.support.pod_watch import
PodWatch``), never put on sys.path itself: tests/sim would then shadow the sim package.
"""
