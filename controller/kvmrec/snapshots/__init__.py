"""Scheduled libvirt snapshots of domains, pruned by tiered retention.

A SnapshotPolicy says when to snapshot a set of domains (a cron expression or a fixed
interval) and which snapshots to keep (the last few, then one per hour, day, week, month and
year, the way sanoid and Proxmox keep storage snapshots). This package holds the pure
cores of that feature and nothing that touches libvirt or the clock: :mod:`.cron` reads cron
expressions and finds their times (daylight-saving changes included), :mod:`.schedule`
answers "is a snapshot due, and when is the next one?" and :mod:`.retention` answers "which
of these snapshots stay and which go?". The reconciler feeds them times and lists and acts on
the answers.
"""
