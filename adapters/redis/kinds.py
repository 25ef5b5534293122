"""The ``redis`` kind: standalone Redis or Redis Cluster; migrations are Python modules only.

Read by the kind registry when a config is loaded: imports no driver.
"""

from __future__ import annotations

from polyshift.framework.core.kinds import Capability, StoreKind, duration, flag, text

REDIS = StoreKind(name="redis", adapter="polyshift.adapters.redis.adapter:RedisAdapter", script=None,
                  server="redis", default_port=6379, options={"prefix": text, "cluster": flag, "lock_ttl": duration},
                  capabilities=frozenset({Capability.EXPIRING_LOCK, Capability.WHOLE_SCOPE_COPY}))
KINDS = (REDIS,)
