"""LiveSPT: live single-particle tracking analysis.

The installed package is ``livespt``, with two subpackages:

* :mod:`livespt.models` -- array-level science (simulators, estimators, networks),
  kept in the repository's top-level ``models/`` folder;
* :mod:`livespt.server` -- everything that touches files, processes or networks,
  kept in the top-level ``server/`` folder.

In the repository, ``livespt/models`` and ``livespt/server`` are symbolic links to
those folders, so the code imports one name (``livespt.…``) whether it runs from
a checkout, an editable install or a wheel; the wheel holds real copies.
"""

__version__ = "0.1.0"
