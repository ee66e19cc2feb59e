"""Where kvmrec keeps what it was asked for and what it found.

``records`` holds the plain data types, ``base`` the ``Store`` interface every backend
implements, and ``sqlite`` the single-host implementation (the only module that imports
peewee). An etcd store for a fleet of hosts implements the same interface.
"""
