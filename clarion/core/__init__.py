"""Clarion's ground: settings, errors, database engines, logging, the clock and small
parsers.

Every other part of Clarion may import from here, and nothing here imports
anything else of Clarion's (an import contract in ``pyproject.toml`` keeps it
so). This ``__init__`` imports nothing: import the module you need.
"""
