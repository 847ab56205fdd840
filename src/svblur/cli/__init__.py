"""The ``svblur-*`` commands (``[project.scripts]`` of ``pyproject.toml``).

Each module is one thin entry point: ``train``, ``eval``, ``predict``, ``degrade``,
``convert``, ``export``, ``compare``, ``make_dataset`` and ``check_data``, each with a
``main()``. Nothing is imported here, so that importing one command does not load the
others (nor Hydra).
"""

__all__: list[str] = []
