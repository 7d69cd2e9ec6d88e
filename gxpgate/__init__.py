"""gxpgate: the edge gateway agent for GxP warehouses.

The repository keeps the owner's folders at its top level (``agent/``, ``buffer/``, ``config/``,
``drivers/``, ``simulators/``); this package holds them as symbolic links, so that they are
imported and installed as ``gxpgate.agent``, ``gxpgate.buffer``, … and cannot collide with other
distributions' top-level packages.
"""
