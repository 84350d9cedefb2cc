"""Built-in pruning criteria, one small module each; importing a module registers it.

Every module in this folder is imported here, so adding a criterion is one file.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
