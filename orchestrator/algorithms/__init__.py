"""Weak-to-strong algorithms behind one contract (`base.Algorithm`), found by name in `REGISTRY`."""
from orchestrator.algorithms import macpo, wspo  # noqa: F401 - registers them
from orchestrator.algorithms.base import REGISTRY, STUDENT, Algorithm, Controller, register

ALGORITHMS = tuple(REGISTRY)


def make_algorithm(name: str, controller: Controller) -> Algorithm:
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name](controller)


__all__ = ["ALGORITHMS", "REGISTRY", "STUDENT", "Algorithm", "Controller", "make_algorithm", "register"]
