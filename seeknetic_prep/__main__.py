"""``python -m seeknetic_prep`` is the same as the ``seeknetic-prep`` command."""

from seeknetic_prep.cli import main

raise SystemExit(main())
