import os

from hypothesis import settings

# JIT compilation makes first calls slow: no deadlines. A modest example count keeps CI short;
# the quick subset (`pytest -m "not slow"`) tries 5 examples per property unless told otherwise.
settings.register_profile("mininsnn", deadline=None, max_examples=int(os.environ.get("MININSNN_EXAMPLES", "20")))
settings.register_profile("quick", deadline=None, max_examples=int(os.environ.get("MININSNN_EXAMPLES", "5")))
settings.load_profile("mininsnn")


def pytest_configure(config):
    if (config.option.markexpr or "").replace(" ", "") == "notslow":
        settings.load_profile("quick")


def pytest_terminal_summary(terminalreporter):
    from tests.gradcheck import MAX_SEEN  # noqa: PLC0415

    if MAX_SEEN["error"] > 0:
        terminalreporter.write_line(f"largest gradient-check relative error: {MAX_SEEN['error']:.3e}")
