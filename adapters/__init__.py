"""One adapter per store kind; ``adapter_for`` builds the right one from a store's config.

What each kind is (its adapter class, script language, options, capabilities) is declared in
the ``kinds`` module of the package that serves it and collected by
``polyshift.framework.core.kinds``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyshift.framework.core.config import StoreConfig
    from polyshift.framework.core.protocol import Adapter


def adapter_for(store: StoreConfig) -> Adapter:
    """The store's adapter, not yet connected; only its kind's driver is imported."""
    return store.spec.build(store)
