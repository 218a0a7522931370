"""Suite-wide collection order."""


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort keeps each group's own order). Under pytest-xdist (make test)
    the long ones then run side by side from the start, instead of the last of them running alone
    at the end: longest-first, the classic schedule for parallel machines."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
