"""Finding generators by name in the ``rag.generators`` entry-point group.

Built-in generators are registered in ``pyproject.toml`` exactly as a
third-party plugin would register its own::

    [project.entry-points."rag.generators"]
    mine = "my_package.module:MyGenerator"
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from rag.errors import RagError, UnknownGeneratorError
from rag.generators.base import Generator, GeneratorContext

GROUP = "rag.generators"


def available_generators() -> dict[str, EntryPoint]:
    """Registered generator names and their entry points, sorted by name."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    return dict(sorted(found.items()))


def load_generator(name: str, context: GeneratorContext) -> Generator:
    """Create the generator registered as ``name``."""
    known = available_generators()
    if name not in known:
        names = ", ".join(known) or "none (is the package installed?)"
        raise UnknownGeneratorError(f"unknown generator {name!r}; available: {names}")
    try:
        factory = known[name].load()
        generator = factory(context)
    except RagError:
        raise
    except Exception as exc:  # a broken plugin must not take the service down
        raise UnknownGeneratorError(f"generator {name!r} could not be loaded: {exc}") from exc
    if not isinstance(generator, Generator):
        raise UnknownGeneratorError(f"generator {name!r} does not implement generate() and stream()")
    return generator
