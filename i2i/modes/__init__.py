"""Training recipes. Each module defines one mode and registers it with ``@register_mode``."""
import importlib
import pkgutil


def load_all_modes() -> None:
    """Import every module of this package so each mode registers itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
