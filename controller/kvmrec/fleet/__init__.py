"""A fleet of hosts sharing one desired state: which host runs what.

``selectors`` says which hosts a ``hostSelector`` picks, and so on which hosts a Network,
OvsBridge or SnapshotPolicy applies; ``scheduling`` places each unplaced Domain on one host
and says why, or why no host will do. Both are pure: they are handed hosts, objects and
placements as plain records and return decisions, leaving reading and writing them (with
their compare-and-swap) to whoever calls them.
"""
