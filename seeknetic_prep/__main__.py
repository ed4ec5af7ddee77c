"""``python -m seeknetic_prep`` is the same as the ``seeknetic-prep`` command."""

from .cli import main

raise SystemExit(main())
