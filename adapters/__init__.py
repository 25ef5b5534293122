"""One adapter per store kind; ``adapter_for`` builds the right one from a store's config.

What each kind is (its adapter class, script language, options, capabilities) is one record
in ``polyshift.framework.core.kinds``; the adapter class it names is imported here, when a
store of its kind is opened, so that reading a config imports no adapter and no driver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from polyshift.framework.core.config import StoreConfig
    from polyshift.framework.core.kinds import StoreKind
    from polyshift.framework.core.protocol import Adapter


def adapter_class(kind: StoreKind) -> Callable[[StoreConfig], Adapter]:
    """The class the kind's record names; it must declare that same record as its ``spec``."""
    module, _, name = kind.adapter.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if getattr(cls, "spec", None) is not kind or getattr(cls, "kind", None) != kind.name:
        raise TypeError(f"{kind.adapter} does not declare the store kind {kind.name!r} as its spec")
    return cast("Callable[[StoreConfig], Adapter]", cls)


def adapter_for(store: StoreConfig) -> Adapter:
    """The store's adapter, not yet connected; only its kind's driver is imported."""
    return adapter_class(store.spec)(store)
