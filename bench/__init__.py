"""
Benchmarks of pb-gateway against the code it replaces, run with C{python -m bench}.

Each suite is a module C{bench/<name>.py} with an C{async def run(reactor, quick)}
that returns L{bench.pb_core.Row}s; C{bench/__main__.py} runs the suites in turn
under one reactor and prints one table. These are measurements, not tests: they
never fail, they print PASS or MISS against the project's targets.
"""
